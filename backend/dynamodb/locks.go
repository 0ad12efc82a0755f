package dynamodb

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/botstate/botstate/driver"
)

// Lock item attributes.
const (
	lkHolders = "h" // JSON array of driver.Holder without their entries: small, read whole
	// lkEntries holds the holders' entries, one per holder in the same
	// order: an entry map, or NULL for a holder without one. They are kept
	// out of the JSON so that a payload is stored as binary, as in the
	// queue: an entry that fits the queue fits its holder. Absent in items
	// written before holders kept entries.
	lkEntries = "he"
	lkPending = "q"    // list of maps {p: payload, enq, exp}: binary payloads stay binary
	lkSkipped = "skip" // as lkPending; absent when empty
	lkFence   = "fence"
	enPayload = "p"
	enQueued  = "enq"
	enExpires = "exp"
)

// lockTTLMargin is how long after everything in a lock record lapsed
// DynamoDB may delete it. Reads never depend on it; NextFence's clock floor
// keeps tokens growing after a deletion.
const lockTTLMargin = time.Hour

func lockItem(ns string, st *driver.LockState, rev string) (item, error) {
	hs := make([]driver.Holder, len(st.Holders))
	var hes []av // the holders' entries, when one has an entry
	for i, h := range st.Holders {
		if h.Entry != nil {
			if hes == nil {
				hes = make([]av, len(st.Holders))
			}
			hes[i] = entryValue(h.Entry)
		}
		h.Entry = nil
		hs[i] = h
	}
	for i := range hes {
		if hes[i] == nil {
			hes[i] = &types.AttributeValueMemberNULL{Value: true}
		}
	}
	hj, err := json.Marshal(hs)
	if err != nil {
		return nil, err
	}
	it := keyOf(pkLock(ns, st.Key), skLock)
	it[attrType] = avS(typeLock)
	it[attrKey] = avS(st.Key)
	it[lkHolders] = avS(string(hj))
	if hes != nil {
		it[lkEntries] = &types.AttributeValueMemberL{Value: hes}
	}
	it[lkPending] = entryList(st.Pending)
	if len(st.Skipped) > 0 {
		it[lkSkipped] = entryList(st.Skipped)
	}
	it[lkFence] = avUint(st.Fence)
	setTime(it, attrExp, st.ExpiresAt)
	if gc, ok := lockGC(st); ok {
		it[attrTTL] = avTTL(gc.Add(lockTTLMargin))
	}
	if at, ok := lockLapse(st); ok {
		it[attrIsOpen] = avS(lapsingLocks(ns))
		it[attrOpenSK] = avS(timeOrderSK(at, st.Key))
	}
	it[attrRev] = avN(rev)
	return it, nil
}

// entryValue is an entry as stored: a map whose payload stays binary.
func entryValue(e *driver.Entry) av {
	m := map[string]av{}
	if e.Payload != nil {
		m[enPayload] = avB(e.Payload)
	}
	setTime(m, enQueued, e.EnqueuedAt)
	setTime(m, enExpires, e.ExpiresAt)
	return &types.AttributeValueMemberM{Value: m}
}

// entryList stores a queue of entries (pending or skipped).
func entryList(es []driver.Entry) av {
	l := make([]av, len(es))
	for i := range es {
		l[i] = entryValue(&es[i])
	}
	return &types.AttributeValueMemberL{Value: l}
}

// entryOf reads what entryValue wrote; nil for anything else (NULL).
func entryOf(v av) *driver.Entry {
	m, ok := v.(*types.AttributeValueMemberM)
	if !ok {
		return nil
	}
	return &driver.Entry{Payload: getB(m.Value, enPayload), EnqueuedAt: getTime(m.Value, enQueued), ExpiresAt: getTime(m.Value, enExpires)}
}

// entriesOf reads the list entryList wrote under name; nil when absent.
func entriesOf(it item, name string) []driver.Entry {
	l, ok := it[name].(*types.AttributeValueMemberL)
	if !ok {
		return nil
	}
	var out []driver.Entry
	for _, v := range l.Value {
		if e := entryOf(v); e != nil {
			out = append(out, *e)
		}
	}
	return out
}

// lockGC is when everything in the record has lapsed; ok is false when
// something in it never lapses.
func lockGC(st *driver.LockState) (time.Time, bool) {
	last := st.ExpiresAt
	if driver.LockIdle(st) && last.IsZero() {
		return last, false
	}
	later := func(t time.Time) bool {
		if t.After(last) {
			last = t
		}
		return !t.IsZero()
	}
	for _, h := range st.Holders {
		if !later(h.ExpiresAt) || h.Entry != nil && !later(h.Entry.ExpiresAt) {
			return last, false
		}
	}
	for _, e := range st.Pending {
		if !later(e.ExpiresAt) {
			return last, false
		}
	}
	return last, !last.IsZero()
}

// lockLapse is when the record turns up in LapsedLocks unless it is written
// again first: when its last holder lapses (at once, with none), provided an
// entry, queued or held, is still live then. ok is false when that never
// comes (nothing would wait, or a holder never lapses); such a record stays
// out of the index.
func lockLapse(st *driver.LockState) (at time.Time, ok bool) {
	for _, h := range st.Holders {
		if h.ExpiresAt.IsZero() {
			return at, false
		}
		if h.ExpiresAt.After(at) {
			at = h.ExpiresAt
		}
	}
	for _, h := range st.Holders {
		if h.Entry != nil && driver.Live(h.Entry.ExpiresAt, at) {
			return at, true
		}
	}
	for _, e := range st.Pending {
		if driver.Live(e.ExpiresAt, at) {
			return at, true
		}
	}
	return at, false
}

func decodeLock(it item) (driver.LockState, error) {
	st := driver.LockState{Key: getS(it, attrKey), Fence: getUint(it, lkFence), ExpiresAt: getTime(it, attrExp)}
	if h := getS(it, lkHolders); h != "" {
		if err := json.Unmarshal([]byte(h), &st.Holders); err != nil {
			return st, err
		}
	}
	if l, ok := it[lkEntries].(*types.AttributeValueMemberL); ok {
		for i, v := range l.Value {
			if i < len(st.Holders) {
				st.Holders[i].Entry = entryOf(v)
			}
		}
	}
	st.Pending = entriesOf(it, lkPending)
	st.Skipped = entriesOf(it, lkSkipped)
	return st, nil
}

// lockPrint is a record's content, to tell whether a call changed it.
func lockPrint(st *driver.LockState) []byte {
	b, _ := json.Marshal(struct {
		H []driver.Holder
		P []driver.Entry
		S []driver.Entry
		F uint64
		E time.Time
	}{st.Holders, st.Pending, st.Skipped, st.Fence, st.ExpiresAt})
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
func (d *Driver) ReleaseLock(ctx context.Context, ns, key string, token uint64, now, idle time.Time, keepPending bool) (es []driver.Entry, err error) {
	err = d.withLock(ctx, "ReleaseLock", ns, key, now, func(st *driver.LockState) error {
		es, err = driver.ApplyRelease(st, token, now, idle, keepPending)
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
func (d *Driver) HandoverLock(ctx context.Context, ns, key string, token uint64, now, expiresAt, idle time.Time, keep bool) (rep driver.HandoverReply, err error) {
	err = d.withLock(ctx, "HandoverLock", ns, key, now, func(st *driver.LockState) error {
		rep, err = driver.ApplyHandover(st, token, now, expiresAt, idle, keep)
		return err
	})
	return rep, err
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

// LapsedLocks implements driver.Locks from the index partition of records
// with an entry that outlives their holders, sorted by when the last holder
// lapses: one query reads those whose time came (at or before now), each is
// pruned at now, and the lapsed ones are returned in key order. The query
// reads every record whose time came, so its cost follows the locks that
// are lapsed, or were and have not been written since, not all locks.
func (d *Driver) LapsedLocks(ctx context.Context, ns string, now time.Time, limit int) ([]driver.LockState, error) {
	const op = "LapsedLocks"
	if err := d.check(); err != nil {
		return nil, err
	}
	var out []driver.LockState
	var start map[string]av
	for {
		// Every sort key whose time is now or earlier sorts below the
		// time followed by '$', which follows the '#' after it.
		q, err := d.db.Query(ctx, &dynamodb.QueryInput{
			TableName:                 aws.String(d.table),
			IndexName:                 aws.String(IndexIsOpen),
			KeyConditionExpression:    aws.String("#io = :p AND #os < :t"),
			ExpressionAttributeNames:  map[string]string{"#io": attrIsOpen, "#os": attrOpenSK},
			ExpressionAttributeValues: map[string]av{":p": avS(lapsingLocks(ns)), ":t": avS(timeSortable(now) + "$")},
			ExclusiveStartKey:         start,
		})
		if err != nil {
			return nil, fail(ctx, op, err)
		}
		for _, it := range q.Items {
			if getS(it, attrType) != typeLock {
				continue
			}
			st, err := decodeLock(it)
			if err != nil {
				return nil, fail(ctx, op, err)
			}
			driver.PruneLock(&st, now)
			if driver.LockLapsed(&st) {
				out = append(out, st)
			}
		}
		if q.LastEvaluatedKey == nil {
			break
		}
		start = q.LastEvaluatedKey
	}
	slices.SortFunc(out, func(a, b driver.LockState) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
