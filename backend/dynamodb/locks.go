package dynamodb

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/botstate/botstate/driver"
)

// Lock item attributes.
const (
	lkHolders = "h"     // JSON array of driver.Holder: small, read whole
	lkPending = "q"     // list of maps {p: payload, enq, exp}: binary payloads stay binary
	lkFence   = "fence" // highest token issued
	enPayload = "p"
	enQueued  = "enq"
	enExpires = "exp"
)

// lockTTLMargin is how long after everything in a lock record lapsed
// DynamoDB may delete it. Reads never depend on it; NextFence's clock floor
// keeps tokens growing after a deletion.
const lockTTLMargin = time.Hour

func lockItem(ns string, st *driver.LockState, rev string) (item, error) {
	hs := st.Holders
	if hs == nil {
		hs = []driver.Holder{}
	}
	hj, err := json.Marshal(hs)
	if err != nil {
		return nil, err
	}
	it := keyOf(pkLock(ns, st.Key), skLock)
	it[attrType] = avS(typeLock)
	it[attrKey] = avS(st.Key)
	it[lkHolders] = avS(string(hj))
	q := make([]av, len(st.Pending))
	for i, e := range st.Pending {
		m := map[string]av{}
		if e.Payload != nil {
			m[enPayload] = avB(e.Payload)
		}
		setTime(m, enQueued, e.EnqueuedAt)
		setTime(m, enExpires, e.ExpiresAt)
		q[i] = &types.AttributeValueMemberM{Value: m}
	}
	it[lkPending] = &types.AttributeValueMemberL{Value: q}
	it[lkFence] = avUint(st.Fence)
	setTime(it, attrExp, st.ExpiresAt)
	if gc, ok := lockGC(st); ok {
		it[attrTTL] = avTTL(gc.Add(lockTTLMargin))
	}
	it[attrRev] = avN(rev)
	return it, nil
}

// lockGC is when everything in the record has lapsed; ok is false when
// something in it never lapses.
func lockGC(st *driver.LockState) (time.Time, bool) {
	last := st.ExpiresAt
	if driver.LockIdle(st) && last.IsZero() {
		return last, false
	}
	for _, h := range st.Holders {
		if h.ExpiresAt.IsZero() {
			return last, false
		}
		if h.ExpiresAt.After(last) {
			last = h.ExpiresAt
		}
	}
	for _, e := range st.Pending {
		if e.ExpiresAt.IsZero() {
			return last, false
		}
		if e.ExpiresAt.After(last) {
			last = e.ExpiresAt
		}
	}
	return last, !last.IsZero()
}

func decodeLock(it item) (driver.LockState, error) {
	st := driver.LockState{Key: getS(it, attrKey), Fence: getUint(it, lkFence), ExpiresAt: getTime(it, attrExp)}
	if h := getS(it, lkHolders); h != "" {
		if err := json.Unmarshal([]byte(h), &st.Holders); err != nil {
			return st, err
		}
	}
	if l, ok := it[lkPending].(*types.AttributeValueMemberL); ok {
		for _, v := range l.Value {
			m, ok := v.(*types.AttributeValueMemberM)
			if !ok {
				continue
			}
			st.Pending = append(st.Pending, driver.Entry{
				Payload: getB(m.Value, enPayload), EnqueuedAt: getTime(m.Value, enQueued), ExpiresAt: getTime(m.Value, enExpires),
			})
		}
	}
	return st, nil
}

// lockPrint is a record's content, to tell whether a call changed it.
func lockPrint(st *driver.LockState) []byte {
	b, _ := json.Marshal(struct {
		H []driver.Holder
		P []driver.Entry
		F uint64
		E time.Time
	}{st.Holders, st.Pending, st.Fence, st.ExpiresAt})
	return b
}

// withLock reads the lock record (a fresh one when absent), lets fn decide
// with the driver's rules, and writes the result back on condition that the
// revision read is still stored, retrying with backoff when another writer
// got there first. A record left idle and expired is deleted; a record fn
// did not change is not written (the decision rests on a consistent read).
func (d *Driver) withLock(ctx context.Context, op, ns, key string, now time.Time, fn func(st *driver.LockState) error) error {
	if err := d.check(); err != nil {
		return err
	}
	pk := pkLock(ns, key)
	rev, wrote := revision(), false
	for n := 0; n < maxAttempts; n++ {
		s, err := d.read(ctx, pk, skLock)
		if err != nil {
			return fail(ctx, op, err)
		}
		if wrote && s.rev == rev {
			// Our put landed but its answer was lost (the SDK's resend
			// failed the condition): fn's results stand.
			return nil
		}
		st := driver.LockState{Key: key}
		if s.exists {
			if st, err = decodeLock(s.it); err != nil {
				return fail(ctx, op, err)
			}
			st.Key = key
		}
		before := lockPrint(&st)
		if err := fn(&st); err != nil {
			return err
		}
		e := newExpr()
		var ok bool
		switch {
		case driver.LockIdle(&st) && !driver.Live(st.ExpiresAt, now):
			if !s.exists {
				return nil
			}
			_, err = d.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
				TableName: aws.String(d.table), Key: keyOf(pk, skLock),
				ConditionExpression:      aws.String(e.sameRev(s.rev)),
				ExpressionAttributeNames: e.namesOrNil(), ExpressionAttributeValues: e.valuesOrNil(),
			})
			ok = err == nil
			if err != nil && retryable(err) {
				err = nil
			}
		case s.exists && bytes.Equal(before, lockPrint(&st)):
			return nil
		default:
			var it item
			if it, err = lockItem(ns, &st, rev); err != nil {
				return fail(ctx, op, err)
			}
			if err := checkSize(op, it); err != nil {
				return err
			}
			ok, err = d.putIf(ctx, it, e.sameRev(s.rev), e)
			wrote = true
		}
		if err != nil {
			return fail(ctx, op, err)
		}
		if ok {
			return nil
		}
		if err := backoff(ctx, n); err != nil {
			return fail(ctx, op, err)
		}
	}
	return contention(op)
}

// Acquire implements driver.Locks with driver.ApplyAcquire.
func (d *Driver) Acquire(ctx context.Context, ns string, r driver.AcquireRequest) (rep driver.AcquireReply, err error) {
	err = d.withLock(ctx, "Acquire", ns, r.Key, r.Now, func(st *driver.LockState) error {
		rep = driver.ApplyAcquire(st, r)
		return nil
	})
	return rep, err
}

// ExtendLock implements driver.Locks with driver.ApplyExtend.
func (d *Driver) ExtendLock(ctx context.Context, ns, key string, token uint64, now, expiresAt time.Time) (h driver.Holder, err error) {
	err = d.withLock(ctx, "ExtendLock", ns, key, now, func(st *driver.LockState) error {
		h, err = driver.ApplyExtend(st, token, now, expiresAt)
		return err
	})
	return h, err
}

// ReleaseLock implements driver.Locks with driver.ApplyRelease.
func (d *Driver) ReleaseLock(ctx context.Context, ns, key string, token uint64, now, idle time.Time) (es []driver.Entry, err error) {
	err = d.withLock(ctx, "ReleaseLock", ns, key, now, func(st *driver.LockState) error {
		es, err = driver.ApplyRelease(st, token, now, idle)
		return err
	})
	return es, err
}

// ForceReleaseLock implements driver.Locks with driver.ApplyForceRelease.
func (d *Driver) ForceReleaseLock(ctx context.Context, ns, key string, now, idle time.Time) (es []driver.Entry, err error) {
	err = d.withLock(ctx, "ForceReleaseLock", ns, key, now, func(st *driver.LockState) error {
		es = driver.ApplyForceRelease(st, now, idle)
		return nil
	})
	return es, err
}

// HandoverLock implements driver.Locks with driver.ApplyHandover: the pop
// and the release are one conditional write, so no entry can slip in
// between.
func (d *Driver) HandoverLock(ctx context.Context, ns, key string, token uint64, now, expiresAt, idle time.Time) (next *driver.Entry, h driver.Holder, held bool, err error) {
	err = d.withLock(ctx, "HandoverLock", ns, key, now, func(st *driver.LockState) error {
		next, h, held, err = driver.ApplyHandover(st, token, now, expiresAt, idle)
		return err
	})
	return next, h, held, err
}

// InspectLock implements driver.Locks.
func (d *Driver) InspectLock(ctx context.Context, ns, key string, now time.Time) (driver.LockState, bool, error) {
	const op = "InspectLock"
	if err := d.check(); err != nil {
		return driver.LockState{}, false, err
	}
	s, err := d.read(ctx, pkLock(ns, key), skLock)
	if err != nil {
		return driver.LockState{}, false, fail(ctx, op, err)
	}
	if !s.exists || getS(s.it, attrKey) != key {
		return driver.LockState{}, false, nil
	}
	st, err := decodeLock(s.it)
	if err != nil {
		return driver.LockState{}, false, fail(ctx, op, err)
	}
	driver.PruneLock(&st, now)
	if driver.LockIdle(&st) && !driver.Live(st.ExpiresAt, now) {
		return driver.LockState{}, false, nil
	}
	return st, true, nil
}
