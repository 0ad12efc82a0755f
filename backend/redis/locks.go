package redis

import (
	"context"
	"strconv"
	"time"

	"github.com/botstate/botstate/driver"
)

// A lock is a hash (fence, idle expiry, one field per holder) and a list of
// pending entries, in one slot chosen by the lock key. The scripts in lua.go
// apply driver/logic.go's rules to them.

func (d *Driver) lockKeys(ns, key string) []string {
	base := d.keyBase(ns, domLocks, key)
	return []string{base + "m" + key, base + "q" + key}
}

func packEntry(e *driver.Entry) string {
	return pack(us(e.EnqueuedAt), us(e.ExpiresAt), string(e.Payload))
}

func unpackEntry(v string) (driver.Entry, error) {
	f, err := unpack(v, 3)
	if err != nil {
		return driver.Entry{}, err
	}
	enq, err1 := fromUS(f[0])
	exp, err2 := fromUS(f[1])
	if err1 != nil || err2 != nil {
		return driver.Entry{}, errCorrupt
	}
	return driver.Entry{Payload: bytesOrNil(f[2]), EnqueuedAt: enq, ExpiresAt: exp}, nil
}

func unpackEntries(vs []string) ([]driver.Entry, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	out := make([]driver.Entry, len(vs))
	for i, v := range vs {
		e, err := unpackEntry(v)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// holderOf reads {token, owner, acquiredAt, expiresAt}.
func holderOf(f []string) (driver.Holder, error) {
	if len(f) < 4 {
		return driver.Holder{}, errCorrupt
	}
	tok, err := strconv.ParseUint(f[0], 10, 64)
	acq, err1 := fromUS(f[2])
	exp, err2 := fromUS(f[3])
	if err != nil || err1 != nil || err2 != nil {
		return driver.Holder{}, errCorrupt
	}
	return driver.Holder{Owner: f[1], Token: tok, AcquiredAt: acq, ExpiresAt: exp}, nil
}

func tokenArg(t uint64) string { return strconv.FormatUint(t, 10) }

// Acquire implements driver.Locks in one script.
func (d *Driver) Acquire(ctx context.Context, ns string, r driver.AcquireRequest) (driver.AcquireReply, error) {
	entry := driver.Entry{Payload: r.Entry, EnqueuedAt: r.Now, ExpiresAt: r.EntryExpiresAt}
	drop := "0"
	if r.DropNewest {
		drop = "1"
	}
	out, err := d.run(ctx, acquireScript, d.lockKeys(ns, r.Key), []string{us(r.Now), r.Owner,
		strconv.Itoa(int(r.Strategy)), packEntry(&entry), us(r.EntryExpiresAt), us(r.ExpiresAt),
		strconv.Itoa(r.MaxHolders), strconv.Itoa(r.QueueMax), drop, us(r.IdleExpiresAt)})
	if err != nil {
		return driver.AcquireReply{}, err
	}
	if len(out) < 5 {
		return driver.AcquireReply{}, errCorrupt
	}
	oc, _ := strconv.Atoi(out[0])
	rep := driver.AcquireReply{Outcome: driver.AcquireOutcome(oc)}
	if rep.Outcome == driver.Acquired {
		if rep.Holder, err = holderOf(out[1:5]); err != nil {
			return driver.AcquireReply{}, err
		}
	}
	if rep.Dropped, err = unpackEntries(out[5:]); err != nil {
		return driver.AcquireReply{}, err
	}
	return rep, nil
}

// ExtendLock implements driver.Locks in one script.
func (d *Driver) ExtendLock(ctx context.Context, ns, key string, token uint64, now, expiresAt time.Time) (driver.Holder, error) {
	out, err := d.run(ctx, extendScript, d.lockKeys(ns, key), []string{us(now), tokenArg(token), us(expiresAt)})
	if err != nil {
		return driver.Holder{}, err
	}
	if len(out) == 0 || out[0] != "1" {
		return driver.Holder{}, driver.ErrNotOwner
	}
	return holderOf(out[1:])
}

// ReleaseLock implements driver.Locks in one script.
func (d *Driver) ReleaseLock(ctx context.Context, ns, key string, token uint64, now, idleExpiresAt time.Time) ([]driver.Entry, error) {
	return d.release(ctx, ns, key, tokenArg(token), now, idleExpiresAt)
}

// ForceReleaseLock implements driver.Locks in one script.
func (d *Driver) ForceReleaseLock(ctx context.Context, ns, key string, now, idleExpiresAt time.Time) ([]driver.Entry, error) {
	return d.release(ctx, ns, key, "", now, idleExpiresAt)
}

func (d *Driver) release(ctx context.Context, ns, key, token string, now, idle time.Time) ([]driver.Entry, error) {
	out, err := d.run(ctx, releaseScript, d.lockKeys(ns, key), []string{us(now), token, us(idle)})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 || out[0] != "1" {
		return nil, driver.ErrNotOwner
	}
	return unpackEntries(out[1:])
}

// HandoverLock implements driver.Locks in one script: popping the next
// entry or releasing the lock is decided and done in the same step.
func (d *Driver) HandoverLock(ctx context.Context, ns, key string, token uint64, now, expiresAt, idleExpiresAt time.Time) (*driver.Entry, driver.Holder, bool, error) {
	out, err := d.run(ctx, handoverScript, d.lockKeys(ns, key), []string{us(now), tokenArg(token), us(expiresAt), us(idleExpiresAt)})
	if err != nil {
		return nil, driver.Holder{}, false, err
	}
	if len(out) == 0 {
		return nil, driver.Holder{}, false, errCorrupt
	}
	switch out[0] {
	case "0":
		return nil, driver.Holder{}, false, driver.ErrNotOwner
	case "2":
		return nil, driver.Holder{}, false, nil
	}
	if len(out) != 6 {
		return nil, driver.Holder{}, false, errCorrupt
	}
	e, err := unpackEntry(out[1])
	if err != nil {
		return nil, driver.Holder{}, false, err
	}
	h, err := holderOf(out[2:])
	if err != nil {
		return nil, driver.Holder{}, false, err
	}
	return &e, h, true, nil
}

// InspectLock implements driver.Locks in one script.
func (d *Driver) InspectLock(ctx context.Context, ns, key string, now time.Time) (driver.LockState, bool, error) {
	out, err := d.run(ctx, inspectScript, d.lockKeys(ns, key), []string{us(now)})
	if err != nil {
		return driver.LockState{}, false, err
	}
	if len(out) == 0 || out[0] != "1" {
		return driver.LockState{}, false, nil
	}
	st, err := parseLock(key, out[1:])
	return st, err == nil, err
}

// parseLock reads {fence, x, nholders, holder fields..., entries...}.
func parseLock(key string, out []string) (driver.LockState, error) {
	if len(out) < 3 {
		return driver.LockState{}, errCorrupt
	}
	fence, err := strconv.ParseUint(out[0], 10, 64)
	x, err1 := fromUS(out[1])
	n, err2 := strconv.Atoi(out[2])
	if err != nil || err1 != nil || err2 != nil || n < 0 || 3+4*n > len(out) {
		return driver.LockState{}, errCorrupt
	}
	st := driver.LockState{Key: key, Fence: fence, ExpiresAt: x}
	for i := 0; i < n; i++ {
		h, err := holderOf(out[3+4*i : 7+4*i])
		if err != nil {
			return driver.LockState{}, err
		}
		st.Holders = append(st.Holders, h)
	}
	if st.Pending, err = unpackEntries(out[3+4*n:]); err != nil {
		return driver.LockState{}, err
	}
	return st, nil
}
