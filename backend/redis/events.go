package redis

import (
	"context"
	"strconv"
	"time"

	"github.com/botstate/botstate/driver"
)

// gcEvery makes one event insert in gcEvery collect lapsed events from the
// namespace's indexes (up to 64 at a time, so collection outpaces
// inserts); the rest skip that step, which is most of the cost of an
// insert that finds nothing to collect.
const gcEvery = 8

func (d *Driver) gcFlag() string {
	if d.inserts.Add(1)%gcEvery == 0 {
		return "1"
	}
	return "0"
}

// eventKeys returns the six keys every event script declares: the event's
// value and the namespace's pending, claims, exp, order and seq indexes.
func (d *Driver) eventKeys(ns, key string) []string {
	base := d.nsBase(ns, domEvents)
	return []string{base + "k:" + key, base + "p", base + "c", base + "x", base + "o", base + "s"}
}

// eventBase is the start of every event value key of ns.
func (d *Driver) eventBase(ns string) string { return d.nsBase(ns, domEvents) + "k:" }

func packEvent(e *driver.Event) string {
	return pack(strconv.Itoa(int(e.Status)), strconv.Itoa(e.Attempts), us(e.CreatedAt), us(e.LeaseUntil),
		us(e.ExpiresAt), e.Token, string(e.Payload), string(e.Result))
}

func unpackEvent(key, v string) (driver.Event, error) {
	f, err := unpack(v, 8)
	if err != nil {
		return driver.Event{}, err
	}
	st, err1 := strconv.Atoi(f[0])
	att, err2 := strconv.Atoi(f[1])
	created, err3 := fromUS(f[2])
	lease, err4 := fromUS(f[3])
	exp, err5 := fromUS(f[4])
	for _, e := range []error{err1, err2, err3, err4, err5} {
		if e != nil {
			return driver.Event{}, errCorrupt
		}
	}
	return driver.Event{Key: key, Status: driver.EventStatus(st), Attempts: att, CreatedAt: created,
		LeaseUntil: lease, ExpiresAt: exp, Token: f[5], Payload: bytesOrNil(f[6]), Result: bytesOrNil(f[7])}, nil
}

// RecordEvent implements driver.Events: one script that inserts the event
// with its pending and expiry index entries unless a live one is there.
func (d *Driver) RecordEvent(ctx context.Context, ns string, w driver.EventWrite) (bool, error) {
	e := driver.Event{Key: w.Key, Status: driver.EventRecorded, Payload: w.Payload, CreatedAt: w.Now, ExpiresAt: w.ExpiresAt}
	out, err := d.run(ctx, recordScript, d.eventKeys(ns, w.Key),
		[]string{us(w.Now), w.Key, d.eventBase(ns), packEvent(&e), us(w.ExpiresAt), strconv.Itoa(w.Limit), d.gcFlag()})
	if err != nil {
		return false, err
	}
	return len(out) > 0 && out[0] == "1", nil
}

// LookupEvent implements driver.Events with one GET.
func (d *Driver) LookupEvent(ctx context.Context, ns, key string, now time.Time) (driver.Event, bool, error) {
	if err := d.check(); err != nil {
		return driver.Event{}, false, err
	}
	v, err := d.do(ctx, d.client.B().Get().Key(d.nsBase(ns, domEvents)+"k:"+key).Build()).ToString()
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
	_, err := d.run(ctx, forgetScript, d.eventKeys(ns, key), []string{"", key, d.eventBase(ns)})
	return err
}

// ClaimEvent implements driver.Events in one script. A new event is built
// here, so the script only stores it and the reply carries no payload back.
func (d *Driver) ClaimEvent(ctx context.Context, ns string, r driver.ClaimRequest) (driver.ClaimReply, error) {
	fresh := driver.Event{Key: r.Key, Status: driver.EventClaimed, Payload: r.Payload, Token: r.Token,
		Attempts: 1, CreatedAt: r.Now, LeaseUntil: r.LeaseUntil, ExpiresAt: r.ExpiresAt}
	existing := "0"
	if r.Existing {
		existing = "1"
	}
	out, err := d.run(ctx, claimScript, d.eventKeys(ns, r.Key), []string{us(r.Now), r.Key, d.eventBase(ns),
		packEvent(&fresh), us(r.ExpiresAt), strconv.Itoa(r.Limit), r.Token, us(r.LeaseUntil), existing, d.gcFlag()})
	if err != nil {
		return driver.ClaimReply{}, err
	}
	if len(out) == 0 {
		return driver.ClaimReply{}, errCorrupt
	}
	switch out[0] {
	case "0":
		return driver.ClaimReply{}, driver.ErrNotFound
	case "1":
		if len(out) == 1 {
			fresh.Payload = driver.Clone(fresh.Payload)
			return driver.ClaimReply{Outcome: driver.ClaimAcquired, Event: fresh}, nil
		}
	}
	if len(out) != 2 {
		return driver.ClaimReply{}, errCorrupt
	}
	ev, err := unpackEvent(r.Key, out[1])
	if err != nil {
		return driver.ClaimReply{}, err
	}
	oc, _ := strconv.Atoi(out[0])
	return driver.ClaimReply{Outcome: driver.ClaimOutcome(oc), Event: ev}, nil
}

func (d *Driver) finish(ctx context.Context, ns, key, token string, complete bool, result []byte, now, expiresAt time.Time) error {
	c := "0"
	if complete {
		c = "1"
	}
	out, err := d.run(ctx, finishScript, d.eventKeys(ns, key), []string{us(now), key, d.eventBase(ns), token, c, string(result), us(expiresAt)})
	if err != nil {
		return err
	}
	if len(out) == 0 || out[0] != "1" {
		return driver.ErrNotOwner
	}
	return nil
}

// CompleteEvent implements driver.Events, fenced by the token in the script.
func (d *Driver) CompleteEvent(ctx context.Context, ns, key, token string, result []byte, now, expiresAt time.Time) error {
	return d.finish(ctx, ns, key, token, true, result, now, expiresAt)
}

// ReleaseEvent implements driver.Events, fenced by the token in the script.
func (d *Driver) ReleaseEvent(ctx context.Context, ns, key, token string, now time.Time) error {
	return d.finish(ctx, ns, key, token, false, nil, now, time.Time{})
}

func (d *Driver) listEvents(ctx context.Context, ns string, now time.Time, limit int, s scriptRef) ([]driver.Event, error) {
	out, err := d.run(ctx, s, d.eventKeys(ns, ""), []string{us(now), "", d.eventBase(ns), strconv.Itoa(limit)})
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

// ExpiredEvents implements driver.Events from the claims index (by lease
// end), sorted by CreatedAt then key inside the script.
func (d *Driver) ExpiredEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.listEvents(ctx, ns, now, limit, expiredScript)
}

// PendingEvents implements driver.Events from the pending index, whose zset
// order (CreatedAt, then key bytewise) is the order asked for.
func (d *Driver) PendingEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.listEvents(ctx, ns, now, limit, pendingScript)
}
