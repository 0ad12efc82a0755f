package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/botstate/botstate/driver"
)

// A lock is a hash (fence, idle expiry, skipped entries, one field per
// holder with the entry it handles) and a list of pending entries, in one
// slot chosen by the lock key, and a member of the lapse bucket of that
// slot while entries may wait on it. The scripts in lua.go apply
// driver/logic.go's rules to them.

// lockKeys returns a lock's record hash, pending list and lapse bucket. The
// three share a slot: on a standalone server there is one bucket per
// namespace; on Cluster one per namespace and slot, named by a tag chosen
// to land in that slot (slotTag), since a lock's own tag is its key's
// alone.
func (d *Driver) lockKeys(ns, key string) []string {
	tag := keyTag(ns, domLocks, key)
	base := d.prefix + "{" + tag + "}"
	before, after := d.bucketEnds(ns)
	return []string{base + "m" + key, base + "q" + key, before + d.bucketPart(ns, slotOf(tag)) + after}
}

// bucketEnds returns what goes before and after bucketPart in a lapse
// bucket's key, so that the LapsedLocks script builds every bucket of a node
// from its part: prefix{ns:l}i on a standalone server, prefix{<slot
// tag>}ns on Cluster.
func (d *Driver) bucketEnds(ns string) (before, after string) {
	if !d.cluster {
		return d.prefix + "{", "}i"
	}
	return d.prefix + "{", "}" + ns
}

// bucketPart is the part of a lapse bucket's key that tells the buckets of
// a namespace apart: its slot's tag on Cluster.
func (d *Driver) bucketPart(ns string, slot int) string {
	if !d.cluster {
		return ns + ":" + domLocks
	}
	return slotTag(slot)
}

func packEntry(e *driver.Entry) string {
	return pack(us(e.EnqueuedAt), us(e.ExpiresAt), string(e.Payload))
}

// packHolder packs a holder as the record hash stores it; a holder without
// an entry has three fields, as older code wrote every holder.
func packHolder(h *driver.Holder) string {
	if h.Entry == nil {
		return pack(h.Owner, us(h.AcquiredAt), us(h.ExpiresAt))
	}
	return pack(h.Owner, us(h.AcquiredAt), us(h.ExpiresAt), packEntry(h.Entry))
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

// Marks a reply puts in a holder's entry field instead of a packed entry
// (which always starts with a digit): the reply's next entry, or the
// caller's own.
const (
	markNext = "n"
	markOwn  = "o"
)

// holderOf reads a reply's {token, owner, acquiredAt, expiresAt, entry};
// next and own stand for the marks.
func holderOf(f []string, next, own *driver.Entry) (driver.Holder, error) {
	if len(f) < 5 {
		return driver.Holder{}, errCorrupt
	}
	tok, err := strconv.ParseUint(f[0], 10, 64)
	acq, err1 := fromUS(f[2])
	exp, err2 := fromUS(f[3])
	if err != nil || err1 != nil || err2 != nil {
		return driver.Holder{}, errCorrupt
	}
	h := driver.Holder{Owner: f[1], Token: tok, AcquiredAt: acq, ExpiresAt: exp}
	switch f[4] {
	case "":
	case markNext, markOwn:
		e := next
		if f[4] == markOwn {
			e = own
		}
		if e == nil {
			return driver.Holder{}, errCorrupt
		}
		c := *e
		c.Payload = driver.Clone(e.Payload)
		h.Entry = &c
	default:
		e, err := unpackEntry(f[4])
		if err != nil {
			return driver.Holder{}, err
		}
		h.Entry = &e
	}
	return h, nil
}

// optEntry reads an entry that may be absent ("").
func optEntry(v string) (*driver.Entry, error) {
	if v == "" {
		return nil, nil
	}
	e, err := unpackEntry(v)
	if err != nil {
		return nil, err
	}
	return &e, nil
}

func tokenArg(t uint64) string { return strconv.FormatUint(t, 10) }

// Acquire implements driver.Locks in one script (driver.ApplyAcquire).
func (d *Driver) Acquire(ctx context.Context, ns string, r driver.AcquireRequest) (driver.AcquireReply, error) {
	entry := driver.Entry{Payload: r.Entry, EnqueuedAt: r.Now, ExpiresAt: r.EntryExpiresAt}
	out, err := d.run(ctx, acquireScript, d.lockKeys(ns, r.Key), []string{us(r.Now), r.Owner,
		strconv.Itoa(int(r.Strategy)), packEntry(&entry), us(r.EntryExpiresAt), us(r.ExpiresAt),
		strconv.Itoa(r.MaxHolders), strconv.Itoa(r.QueueMax), flag(r.DropNewest), us(r.IdleExpiresAt),
		flag(r.NoEntry), flag(len(r.Entry) > 0), flag(r.QueueWhenFull)})
	if err != nil {
		return driver.AcquireReply{}, err
	}
	if len(out) < 8 {
		return driver.AcquireReply{}, errCorrupt
	}
	oc, _ := strconv.Atoi(out[0])
	nd, err := strconv.Atoi(out[7])
	if err != nil || nd < 0 || 8+nd > len(out) {
		return driver.AcquireReply{}, errCorrupt
	}
	rep := driver.AcquireReply{Outcome: driver.AcquireOutcome(oc)}
	if rep.Dropped, err = unpackEntries(out[8 : 8+nd]); err != nil {
		return driver.AcquireReply{}, err
	}
	if rep.Outcome != driver.Acquired {
		return rep, nil
	}
	if rep.Next, err = optEntry(out[6]); err != nil {
		return driver.AcquireReply{}, err
	}
	if rep.Holder, err = holderOf(out[1:6], rep.Next, &entry); err != nil {
		return driver.AcquireReply{}, err
	}
	if rep.Skipped, err = unpackEntries(out[8+nd:]); err != nil {
		return driver.AcquireReply{}, err
	}
	return rep, nil
}

// ExtendLock implements driver.Locks in one script (driver.ApplyExtend).
func (d *Driver) ExtendLock(ctx context.Context, ns, key string, token uint64, now, expiresAt time.Time) (driver.Holder, error) {
	out, err := d.run(ctx, extendScript, d.lockKeys(ns, key), []string{us(now), tokenArg(token), us(expiresAt)})
	if err != nil {
		return driver.Holder{}, err
	}
	if len(out) == 0 || out[0] != "1" {
		return driver.Holder{}, driver.ErrNotOwner
	}
	return holderOf(out[1:], nil, nil)
}

// ReleaseLock implements driver.Locks in one script (driver.ApplyRelease).
func (d *Driver) ReleaseLock(ctx context.Context, ns, key string, token uint64, now, idleExpiresAt time.Time, keepPending bool) ([]driver.Entry, error) {
	return d.release(ctx, ns, key, tokenArg(token), now, idleExpiresAt, keepPending)
}

// ForceReleaseLock implements driver.Locks in one script
// (driver.ApplyForceRelease).
func (d *Driver) ForceReleaseLock(ctx context.Context, ns, key string, now, idleExpiresAt time.Time) ([]driver.Entry, error) {
	return d.release(ctx, ns, key, "", now, idleExpiresAt, false)
}

func (d *Driver) release(ctx context.Context, ns, key, token string, now, idle time.Time, keepPending bool) ([]driver.Entry, error) {
	out, err := d.run(ctx, releaseScript, d.lockKeys(ns, key), []string{us(now), token, us(idle), flag(keepPending)})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 || out[0] != "1" {
		return nil, driver.ErrNotOwner
	}
	return unpackEntries(out[1:])
}

// HandoverLock implements driver.Locks in one script (driver.ApplyHandover):
// popping the next entry, or releasing the lock (keeping it, with keep), is
// decided and done in the same step.
func (d *Driver) HandoverLock(ctx context.Context, ns, key string, token uint64, now, expiresAt, idleExpiresAt time.Time, keep bool) (driver.HandoverReply, error) {
	out, err := d.run(ctx, handoverScript, d.lockKeys(ns, key),
		[]string{us(now), tokenArg(token), us(expiresAt), us(idleExpiresAt), flag(keep)})
	if err != nil {
		return driver.HandoverReply{}, err
	}
	if len(out) == 0 {
		return driver.HandoverReply{}, errCorrupt
	}
	switch out[0] {
	case "0":
		return driver.HandoverReply{}, driver.ErrNotOwner
	case "2":
		return driver.HandoverReply{}, nil
	}
	if len(out) < 7 {
		return driver.HandoverReply{}, errCorrupt
	}
	rep := driver.HandoverReply{Held: true}
	if rep.Next, err = optEntry(out[1]); err != nil {
		return driver.HandoverReply{}, err
	}
	if rep.Holder, err = holderOf(out[2:7], rep.Next, nil); err != nil {
		return driver.HandoverReply{}, err
	}
	if rep.Skipped, err = unpackEntries(out[7:]); err != nil {
		return driver.HandoverReply{}, err
	}
	return rep, nil
}

// InspectLock implements driver.Locks in one read-only script.
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

// lapsedChunk is the most lapse buckets one LapsedLocks script reads: on
// Cluster, where each primary has some 5,000 slots to look at (about a
// microsecond each when empty), it keeps each script near a millisecond.
const lapsedChunk = 1024

// LapsedLocks implements driver.Locks with read scripts over the lapse
// buckets (one on a standalone server; on Cluster, on every primary, the
// buckets of the slots it serves, lapsedChunk at a time, the primaries in
// parallel). Of each bucket a script reads only the locks whose holders all
// lapsed by now, checks each as InspectLock would, and answers the lapsed
// ones, the limit lowest keys; the lowest of all the answers are kept. Each
// script is atomic on its node; the listing as a whole is not a snapshot,
// which a sweeper does not need: TakeOver decides again on each lock. Its
// cost is one probe per bucket (16384 on Cluster, spread over the
// primaries) plus the locks whose holders lapsed, whatever the keyspace.
func (d *Driver) LapsedLocks(ctx context.Context, ns string, now time.Time, limit int) ([]driver.LockState, error) {
	if err := d.check(); err != nil || limit <= 0 {
		return nil, err
	}
	before, after := d.bucketEnds(ns)
	head := []string{us(now), strconv.Itoa(limit), d.prefix + "{" + ns + ":" + domLocks + ":", before, after}
	args := func(parts []string) []string { return append(head[:len(head):len(head)], parts...) }
	if !d.cluster {
		rep, err := d.run(ctx, lapsedScript, nil, args([]string{d.bucketPart(ns, 0)}))
		if err != nil {
			return nil, err
		}
		return lapsedStates(rep, nil, limit)
	}
	masters, err := d.masters(ctx)
	if err != nil {
		return nil, err
	}
	type answer struct {
		out []driver.LockState
		err error
	}
	answers := make(chan answer, len(masters))
	for _, c := range masters {
		go func() {
			slots, err := d.ownSlots(ctx, c)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			var execs []rueidis.LuaExec
			for len(slots) > 0 {
				n := min(len(slots), lapsedChunk)
				parts := make([]string, n)
				for i, s := range slots[:n] {
					parts[i] = d.bucketPart(ns, s)
				}
				execs = append(execs, rueidis.LuaExec{Args: args(parts)})
				slots = slots[n:]
			}
			var a answer
			for _, res := range lapsedScript.ExecMulti(ctx, c, execs...) {
				rep, err := strs(res)
				if err != nil {
					answers <- answer{err: d.fail(ctx, err)}
					return
				}
				if a.out, err = lapsedStates(rep, a.out, limit); err != nil {
					answers <- answer{err: err}
					return
				}
			}
			answers <- a
		}()
	}
	var out []driver.LockState
	var first error
	for range masters {
		a := <-answers
		if first == nil {
			first = a.err
		}
		out = append(out, a.out...)
	}
	if first != nil {
		return nil, first
	}
	return lapsedStates(nil, out, limit)
}

// lapsedStates adds the locks of a LapsedLocks script's reply to out and
// returns the limit lowest keys, in order.
func lapsedStates(rep []string, out []driver.LockState, limit int) ([]driver.LockState, error) {
	for _, v := range rep {
		f, err := unpackAll(v, 16)
		if err != nil || len(f) == 0 {
			return nil, errCorrupt
		}
		st, err := parseLock(f[0], f[1:])
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b driver.LockState) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// ownSlots returns the slots the Cluster node c serves, from the "myself"
// line of its CLUSTER NODES (ranges "0-5460" or single slots; slots being
// imported, shown in brackets, are not yet its own).
func (d *Driver) ownSlots(ctx context.Context, c rueidis.Client) ([]int, error) {
	txt, err := c.Do(ctx, c.B().ClusterNodes().Build()).ToString()
	if err != nil {
		return nil, d.fail(ctx, err)
	}
	for _, line := range strings.Split(txt, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !slices.Contains(strings.Split(f[2], ","), "myself") {
			continue
		}
		var slots []int
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue
			}
			lo, hi, isRange := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if isRange {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil || a < 0 || b >= clusterSlots || a > b {
				return nil, fmt.Errorf("redis: CLUSTER NODES slot range %q: %w", r, errCorrupt)
			}
			for s := a; s <= b; s++ {
				slots = append(slots, s)
			}
		}
		return slots, nil
	}
	return nil, fmt.Errorf("redis: CLUSTER NODES names no node as myself: %w", errCorrupt)
}

// parseLock reads {fence, x, nholders, npending, holders..., pending
// entries..., skipped entries...}.
func parseLock(key string, out []string) (driver.LockState, error) {
	if len(out) < 4 {
		return driver.LockState{}, errCorrupt
	}
	fence, err := strconv.ParseUint(out[0], 10, 64)
	x, err1 := fromUS(out[1])
	n, err2 := strconv.Atoi(out[2])
	np, err3 := strconv.Atoi(out[3])
	if err != nil || err1 != nil || err2 != nil || err3 != nil || n < 0 || np < 0 || 4+5*n+np > len(out) {
		return driver.LockState{}, errCorrupt
	}
	st := driver.LockState{Key: key, Fence: fence, ExpiresAt: x}
	for i := 0; i < n; i++ {
		h, err := holderOf(out[4+5*i:9+5*i], nil, nil)
		if err != nil {
			return driver.LockState{}, err
		}
		st.Holders = append(st.Holders, h)
	}
	at := 4 + 5*n
	if st.Pending, err = unpackEntries(out[at : at+np]); err != nil {
		return driver.LockState{}, err
	}
	if st.Skipped, err = unpackEntries(out[at+np:]); err != nil {
		return driver.LockState{}, err
	}
	return st, nil
}
