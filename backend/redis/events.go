package redis

import (
	"context"
	"strconv"
	"time"

	"github.com/botstate/botstate/driver"
)

// gcEvery makes one event insert in gcEvery collect stale entries among
// the oldest of its index (up to 32 at a time, so collection outpaces
// inserts); the rest skip that step.
const gcEvery = 8

// gcBound returns the collection bound of an insert made at now that keeps
// its event until expiresAt, on one call in gcEvery, and "" on the others.
// An entry created before the bound lapsed already if it had this call's
// window and lease (expiresAt - now after it), so collection only reads
// entries likely to be dead.
func (d *Driver) gcBound(now, expiresAt time.Time) string {
	if d.inserts.Add(1)%gcEvery != 0 || expiresAt.IsZero() {
		return ""
	}
	return strconv.FormatInt(2*now.UnixMicro()-expiresAt.UnixMicro(), 10)
}

// Event index keys, after the namespace's event base (see lua.go).
const (
	evClaims   = "p" // claimed events by createdAt
	evReleased = "r" // released events (and older code's recorded ones) by createdAt
	evRecords  = "n" // recorded events by createdAt
	evFailed   = "f" // failed events by createdAt
	evOrder    = "o" // events inserted under a limit by createdAt
)

// eventKey is the key of an event's value.
func (d *Driver) eventKey(base, key string) string { return base + "k:" + key }

// neverMS is the expiry given to an index (of events, or a lapse bucket)
// that holds an item without one.
const neverMS = "253402300799000"

// pxat is the native expiry of a value that lapses at t: t rounded up to the
// millisecond, "" for never.
func pxat(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(ceilDiv(t.UnixMicro(), 1000), 10)
}

// indexExpiry is the native expiry an index needs to outlive an event that
// lapses at t: rounded up to the minute, so that most inserts find their
// index's expiry far enough and only read it.
func indexExpiry(t time.Time) string {
	if t.IsZero() {
		return neverMS
	}
	return strconv.FormatInt(ceilDiv(t.UnixMicro(), 60_000_000)*60_000, 10)
}

func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b > 0 {
		q++
	}
	return q
}

// packEvent packs an event as the scripts read it. LastError and RetryAt
// are the two last fields, left out when both are empty, as every new event
// is: a value without them reads as zero, which is also how values written
// before they existed read.
func packEvent(e *driver.Event) string {
	st, att, created, lease, exp := strconv.Itoa(int(e.Status)), strconv.Itoa(e.Attempts), us(e.CreatedAt), us(e.LeaseUntil), us(e.ExpiresAt)
	if e.LastError == "" && e.RetryAt.IsZero() {
		return pack(st, att, created, lease, exp, e.Token, string(e.Payload), string(e.Result))
	}
	return pack(st, att, created, lease, exp, e.Token, string(e.Payload), string(e.Result), e.LastError, us(e.RetryAt))
}

func unpackEvent(key, v string) (driver.Event, error) {
	f, err := unpackAll(v, 10)
	if err != nil || (len(f) != 8 && len(f) != 10) {
		return driver.Event{}, errCorrupt
	}
	st, err1 := strconv.Atoi(f[0])
	att, err2 := strconv.Atoi(f[1])
	created, err3 := fromUS(f[2])
	lease, err4 := fromUS(f[3])
	exp, err5 := fromUS(f[4])
	var retry time.Time
	var err6 error
	e := driver.Event{Key: key, Token: f[5], Payload: bytesOrNil(f[6]), Result: bytesOrNil(f[7])}
	if len(f) == 10 {
		e.LastError = f[8]
		retry, err6 = fromUS(f[9])
	}
	for _, err := range []error{err1, err2, err3, err4, err5, err6} {
		if err != nil {
			return driver.Event{}, errCorrupt
		}
	}
	e.Status, e.Attempts, e.CreatedAt, e.LeaseUntil, e.ExpiresAt, e.RetryAt = driver.EventStatus(st), att, created, lease, exp, retry
	return e, nil
}

// RecordEvent implements driver.Events: one script that stores the event
// and joins it to the recorded index unless a live one is there.
func (d *Driver) RecordEvent(ctx context.Context, ns string, w driver.EventWrite) (bool, error) {
	if d.scan {
		return d.scanRecord(ctx, ns, w)
	}
	e := driver.Event{Key: w.Key, Status: driver.EventRecorded, Payload: w.Payload, CreatedAt: w.Now, ExpiresAt: w.ExpiresAt}
	keys, args := d.insertArgs(ns, evRecords, &e, w, "")
	n, _, err := d.runEvent(ctx, recordScript, keys, args)
	return n == 1, err
}

// insertArgs builds the KEYS and ARGV of the insert scripts (see lua.go);
// maxAttempts is the claim script's attempt limit, "" for a record.
func (d *Driver) insertArgs(ns, index string, e *driver.Event, w driver.EventWrite, maxAttempts string) ([]string, []string) {
	base := d.nsBase(ns, domEvents)
	n := 6
	if maxAttempts != "" {
		n++
	}
	var keys []string
	if w.Limit > 0 {
		keys = []string{d.eventKey(base, w.Key), base + index, base + evOrder}
		n++
	} else {
		keys = []string{d.eventKey(base, w.Key), base + index}
	}
	args := make([]string, n)
	args[0], args[1], args[2], args[3], args[4], args[5] = packEvent(e), pxat(w.ExpiresAt), us(w.Now), w.Key,
		indexExpiry(w.ExpiresAt), d.gcBound(w.Now, w.ExpiresAt)
	if maxAttempts != "" {
		args[6] = maxAttempts
	}
	if w.Limit > 0 {
		args[n-1] = strconv.Itoa(w.Limit)
	}
	return keys, args
}

// runEvent runs an event script whose reply is an integer, or an array of
// an integer and a packed event.
func (d *Driver) runEvent(ctx context.Context, s scriptRef, keys, args []string) (int64, string, error) {
	if err := d.check(); err != nil {
		return 0, "", err
	}
	msg, err := s.Exec(ctx, d.client, keys, args).ToMessage()
	if err != nil {
		return 0, "", d.fail(ctx, err)
	}
	if msg.IsInt64() {
		n, _ := msg.AsInt64()
		return n, "", nil
	}
	arr, err := msg.ToArray()
	if err != nil || len(arr) == 0 {
		return 0, "", errCorrupt
	}
	n, err := arr[0].AsInt64()
	if err != nil {
		return 0, "", errCorrupt
	}
	if len(arr) == 1 {
		return n, "", nil
	}
	v, err := arr[1].ToString()
	if err != nil {
		return 0, "", errCorrupt
	}
	return n, v, nil
}

// LookupEvent implements driver.Events with one GET.
func (d *Driver) LookupEvent(ctx context.Context, ns, key string, now time.Time) (driver.Event, bool, error) {
	if err := d.check(); err != nil {
		return driver.Event{}, false, err
	}
	if d.scan {
		raw, present, err := d.scanGet(ctx, d.scanKey(ns, key))
		if err != nil {
			return driver.Event{}, false, err
		}
		e, live, err := scanEvent(key, raw, present, now)
		if err != nil || !live {
			return driver.Event{}, false, err
		}
		return e, true, nil
	}
	v, err := d.do(ctx, d.client.B().Get().Key(d.eventKey(d.nsBase(ns, domEvents), key)).Build()).ToString()
	if err != nil {
		if isNil(err) {
			return driver.Event{}, false, nil
		}
		return driver.Event{}, false, d.fail(ctx, err)
	}
	e, err := unpackEvent(key, v)
	if err != nil {
		return driver.Event{}, false, err
	}
	if !driver.Live(e.ExpiresAt, now) {
		return driver.Event{}, false, nil
	}
	return e, true, nil
}

// ForgetEvent implements driver.Events: the value and its index entries go
// together.
func (d *Driver) ForgetEvent(ctx context.Context, ns, key string) error {
	if d.scan {
		return d.scanForget(ctx, ns, key)
	}
	base := d.nsBase(ns, domEvents)
	_, _, err := d.runEvent(ctx, forgetScript, []string{d.eventKey(base, key), base + evClaims}, []string{key})
	return err
}

// ClaimEvent implements driver.Events in one script: Claim has one, and
// Reclaim and TakeOver share another. Both decide as driver.ApplyClaim does
// (retry times, takeovers by the holder's token, the attempt limit). A new
// event is built here, so the script only stores it and the reply carries
// no payload back.
func (d *Driver) ClaimEvent(ctx context.Context, ns string, r driver.ClaimRequest) (driver.ClaimReply, error) {
	if d.scan {
		return d.scanClaim(ctx, ns, r)
	}
	fresh := driver.Event{Key: r.Key, Status: driver.EventClaimed, Payload: r.Payload, Token: r.Token,
		Attempts: 1, CreatedAt: r.Now, LeaseUntil: r.LeaseUntil, ExpiresAt: r.ExpiresAt}
	s := claimScript
	var keys, args []string
	if r.Existing {
		// A Reclaim never inserts: no limit, no collection.
		s = reclaimScript
		base := d.nsBase(ns, domEvents)
		keys = []string{d.eventKey(base, r.Key), base + evClaims}
		args = []string{packEvent(&fresh), pxat(r.ExpiresAt), us(r.Now), r.Key, indexExpiry(r.ExpiresAt),
			r.Holder, strconv.Itoa(r.MaxAttempts)}
	} else {
		keys, args = d.insertArgs(ns, evClaims, &fresh, r.EventWrite, strconv.Itoa(r.MaxAttempts))
	}
	oc, v, err := d.runEvent(ctx, s, keys, args)
	if err != nil {
		return driver.ClaimReply{}, err
	}
	switch {
	case oc == 0:
		return driver.ClaimReply{}, driver.ErrNotFound
	case oc == 1 && v == "":
		// The portable layer reads only Attempts (and Result when
		// completed) from the reply, so the payload is not copied back.
		return driver.ClaimReply{Outcome: driver.ClaimAcquired,
			Event: driver.Event{Key: r.Key, Status: driver.EventClaimed, Attempts: 1}}, nil
	case v == "":
		return driver.ClaimReply{}, errCorrupt
	}
	ev, err := unpackEvent(r.Key, v)
	if err != nil {
		return driver.ClaimReply{}, err
	}
	return driver.ClaimReply{Outcome: driver.ClaimOutcome(oc), Event: ev}, nil
}

// fenced runs one of the scripts fenced by a claim token (Complete,
// Extend, Release), whose reply is 1 done or 0 not the owner.
func (d *Driver) fenced(ctx context.Context, s scriptRef, ns, key string, args []string) error {
	base := d.nsBase(ns, domEvents)
	n, _, err := d.runEvent(ctx, s, []string{d.eventKey(base, key), base + evClaims}, args)
	if err != nil {
		return err
	}
	if n != 1 {
		return driver.ErrNotOwner
	}
	return nil
}

// CompleteEvent implements driver.Events in one script, fenced by the
// token (driver.ApplyComplete).
func (d *Driver) CompleteEvent(ctx context.Context, ns, key, token string, result []byte, now, expiresAt time.Time) error {
	if d.scan {
		return d.scanFenced(ctx, scCompleteScript, ns, key, []string{us(now), token, string(result), us(expiresAt), pxat(expiresAt)})
	}
	return d.fenced(ctx, completeScript, ns, key,
		[]string{us(now), key, token, string(result), us(expiresAt), pxat(expiresAt), indexExpiry(expiresAt)})
}

// ExtendEvent implements driver.Events in one script, fenced by the token
// (driver.ApplyExtendEvent).
func (d *Driver) ExtendEvent(ctx context.Context, ns, key, token string, now, leaseUntil, expiresAt time.Time) error {
	if d.scan {
		return d.scanFenced(ctx, scExtendScript, ns, key, []string{us(now), token, us(leaseUntil), us(expiresAt), pxat(expiresAt)})
	}
	return d.fenced(ctx, extendEventScript, ns, key,
		[]string{us(now), key, token, us(leaseUntil), us(expiresAt), pxat(expiresAt), indexExpiry(expiresAt)})
}

// ReleaseEvent implements driver.Events in one script, fenced by the token
// (driver.ApplyReleaseEvent): the claim leaves the claims index for the
// released or the failed one in the same step.
func (d *Driver) ReleaseEvent(ctx context.Context, ns string, r driver.ReleaseRequest) error {
	if d.scan {
		return d.scanRelease(ctx, ns, r)
	}
	return d.fenced(ctx, releaseEventScript, ns, r.Key, []string{us(r.Now), r.Key, r.Token, us(r.RetryAt),
		us(r.ExpiresAt), pxat(r.ExpiresAt), indexExpiry(r.ExpiresAt), r.Reason, flag(r.Fail),
		strconv.Itoa(r.MaxAttempts), flag(r.Defer), d.gcBound(r.Now, r.ExpiresAt)})
}

// RetryEvent implements driver.Events in one script
// (driver.ApplyRetryEvent): a failed event moves back to the released index.
func (d *Driver) RetryEvent(ctx context.Context, ns, key string, now, expiresAt time.Time) error {
	if d.scan {
		return d.scanRetry(ctx, ns, key, now, expiresAt)
	}
	base := d.nsBase(ns, domEvents)
	n, _, err := d.runEvent(ctx, retryEventScript, []string{d.eventKey(base, key), base + evClaims},
		[]string{us(now), key, us(expiresAt), pxat(expiresAt), indexExpiry(expiresAt)})
	switch {
	case err != nil:
		return err
	case n == 0:
		return driver.ErrNotFound
	case n == 2:
		return driver.ErrConflict
	}
	return nil
}

// flag is a boolean script argument.
func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (d *Driver) listEvents(ctx context.Context, ns string, now time.Time, limit int, s scriptRef) ([]driver.Event, error) {
	base := d.nsBase(ns, domEvents)
	out, err := d.run(ctx, s, []string{base + evClaims, base + evReleased, base + evRecords, base + evFailed},
		[]string{us(now), strconv.Itoa(limit)})
	if err != nil {
		return nil, err
	}
	evs := make([]driver.Event, 0, len(out)/2)
	for i := 0; i+1 < len(out); i += 2 {
		e, err := unpackEvent(out[i], out[i+1])
		if err != nil {
			return nil, err
		}
		evs = append(evs, e)
	}
	return evs, nil
}

// ExpiredEvents implements driver.Events by walking the claims index, whose
// zset order (CreatedAt, then key bytewise) is the order asked for, and
// keeping the claims whose lease ended.
func (d *Driver) ExpiredEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	if d.scan {
		return d.scanList(ctx, ns, now, limit, func(e *driver.Event) bool {
			return e.Status == driver.EventClaimed && !e.LeaseUntil.After(now)
		})
	}
	return d.listEvents(ctx, ns, now, limit, expiredScript)
}

// DueEvents implements driver.Events by merging two walks in the order
// asked for: the claims index, keeping the claims whose lease ended, and the
// released index, keeping the events whose retry time came. It reads the
// live claims and the released events still waiting that are older than
// what it returns, and no recorded, completed or failed event.
func (d *Driver) DueEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	if d.scan {
		return d.scanList(ctx, ns, now, limit, func(e *driver.Event) bool { return driver.EventDue(e, now) })
	}
	return d.listEvents(ctx, ns, now, limit, dueScript)
}

// FailedEvents implements driver.Events by walking the failed index.
func (d *Driver) FailedEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	if d.scan {
		return d.scanList(ctx, ns, now, limit, func(e *driver.Event) bool { return e.Status == driver.EventFailed })
	}
	return d.listEvents(ctx, ns, now, limit, failedScript)
}

// PendingEvents implements driver.Events by merging the claims, released
// and recorded indexes, each in the order asked for (CreatedAt, then key
// bytewise); failed events have an index of their own and are left out.
func (d *Driver) PendingEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	if d.scan {
		return d.scanList(ctx, ns, now, limit, driver.EventPending)
	}
	return d.listEvents(ctx, ns, now, limit, pendingScript)
}
