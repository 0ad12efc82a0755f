package redis

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/botstate/botstate/driver"
)

// Index-free events, chosen with the URL option events=scan.
//
// Each event is one value, packed as in the indexed layout, under a key
// of its own slot: prefix{ns:e:HASH}k:key (keyBase), so a namespace's
// events spread over every master of a Cluster. No index is written: a new
// key is one SET NX GET PXAT and nothing else, Complete and Extend are one
// script on that one key, and the rarer paths (a duplicate that may take
// over, Release, Retry) read the value, decide in Go with the same driver
// functions the other backends use, and store the result with a
// compare-and-set script, again on that one key.
//
// The recovery listings have no index to read: they SCAN every master for
// the namespace's event keys and read every value, completed ones included,
// so their cost grows with the events remembered (BENCHMARKS.md has the
// figures). An event limit keeps an order zset per namespace
// (prefix{ns:e}o), written after the insert and trimmed there: the events
// beyond the limit are deleted by separate calls, so the bound holds once
// the inserts that passed it have returned, not inside each insert.

var (
	scSwapScript     = rueidis.NewLuaScript(luaPack + luaLive + lua("evOwn") + lua("scSwap"))
	scCompleteScript = rueidis.NewLuaScript(luaPack + luaLive + lua("evOwn") + lua("scComplete"))
	scExtendScript   = rueidis.NewLuaScript(luaPack + luaLive + lua("evOwn") + lua("scExtend"))
	scOrderScript    = rueidis.NewLuaScript(lua("scOrder"))
	scEvictScript    = rueidis.NewLuaScript(luaPack + lua("scEvict"))
)

// scanKey is the key of an index-free event.
func (d *Driver) scanKey(ns, key string) string {
	return d.keyBase(ns, domEvents, key) + "k:" + key
}

// scanPattern matches every index-free event key of ns.
func (d *Driver) scanPattern(ns string) string {
	return globEscape(d.prefix) + "{" + ns + ":" + domEvents + ":*}k:*"
}

// scanSetNew stores v under k unless a value is there; it returns what was
// there ("" and false when v was stored).
func (d *Driver) scanSetNew(ctx context.Context, k, v string, exp time.Time) (string, bool, error) {
	b := d.client.B().Set().Key(k).Value(v).Nx().Get()
	var cmd rueidis.Completed
	if exp.IsZero() {
		cmd = b.Build()
	} else {
		cmd = b.Pxat(pxatTime(exp)).Build()
	}
	cur, err := d.do(ctx, cmd).ToString()
	if isNil(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, d.fail(ctx, err)
	}
	return cur, true, nil
}

// pxatTime is the native expiry of a value that lapses at t (not zero),
// rounded up to the millisecond as pxat does.
func pxatTime(t time.Time) time.Time { return time.UnixMilli(ceilDiv(t.UnixMicro(), 1000)) }

// scanGet reads the value under k ("" and false when absent).
func (d *Driver) scanGet(ctx context.Context, k string) (string, bool, error) {
	v, err := d.do(ctx, d.client.B().Get().Key(k).Build()).ToString()
	if isNil(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, d.fail(ctx, err)
	}
	return v, true, nil
}

// scanSwap replaces old (raw, "" for none) under k with next. It reports
// whether it did, and otherwise what is there now ("" for nothing: a
// packed event is never empty).
func (d *Driver) scanSwap(ctx context.Context, k, old string, next *driver.Event) (bool, string, error) {
	n, cur, err := d.runEvent(ctx, scSwapScript, []string{k}, []string{old, packEvent(next), pxat(next.ExpiresAt)})
	if err != nil {
		return false, "", err
	}
	return n == 1, cur, nil
}

// scanEvent unpacks raw (present says whether there was a value) and
// reports whether it is live at now.
func scanEvent(key, raw string, present bool, now time.Time) (driver.Event, bool, error) {
	if !present {
		return driver.Event{}, false, nil
	}
	e, err := unpackEvent(key, raw)
	if err != nil {
		return driver.Event{}, false, err
	}
	return e, driver.Live(e.ExpiresAt, now), nil
}

// scanUpdate reads the event under key, asks decide for the value to store,
// and stores it if the value read is still there, reading again otherwise.
// decide returns write false to store nothing. raw and present, when
// present is true, are a value already read.
func (d *Driver) scanUpdate(ctx context.Context, ns, key string, now time.Time, raw string, present bool,
	decide func(cur driver.Event, found bool) (next driver.Event, write bool, err error)) (inserted bool, err error) {
	k := d.scanKey(ns, key)
	if !present {
		if raw, present, err = d.scanGet(ctx, k); err != nil {
			return false, err
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return false, d.fail(ctx, err)
		}
		cur, found, err := scanEvent(key, raw, present, now)
		if err != nil {
			return false, err
		}
		next, write, err := decide(cur, found)
		if err != nil || !write {
			return false, err
		}
		done, cur2, err := d.scanSwap(ctx, k, raw, &next)
		if err != nil {
			return false, err
		}
		if done {
			return !found, nil
		}
		raw, present = cur2, cur2 != ""
	}
}

func (d *Driver) scanRecord(ctx context.Context, ns string, w driver.EventWrite) (bool, error) {
	if err := d.check(); err != nil {
		return false, err
	}
	e := driver.Event{Key: w.Key, Status: driver.EventRecorded, Payload: w.Payload, CreatedAt: w.Now, ExpiresAt: w.ExpiresAt}
	raw, present, err := d.scanSetNew(ctx, d.scanKey(ns, w.Key), packEvent(&e), w.ExpiresAt)
	if err != nil {
		return false, err
	}
	inserted := !present
	if present {
		inserted, err = d.scanUpdate(ctx, ns, w.Key, w.Now, raw, true, func(_ driver.Event, found bool) (driver.Event, bool, error) {
			return e, !found, nil
		})
		if err != nil {
			return false, err
		}
	}
	if inserted && w.Limit > 0 {
		return true, d.scanOrder(ctx, ns, w)
	}
	return inserted, nil
}

func (d *Driver) scanClaim(ctx context.Context, ns string, r driver.ClaimRequest) (driver.ClaimReply, error) {
	if err := d.check(); err != nil {
		return driver.ClaimReply{}, err
	}
	var reply driver.ClaimReply
	raw, present, inserted := "", false, false
	if !r.Existing {
		fresh := driver.Event{Key: r.Key, Status: driver.EventClaimed, Payload: r.Payload, Token: r.Token,
			Attempts: 1, CreatedAt: r.Now, LeaseUntil: r.LeaseUntil, ExpiresAt: r.ExpiresAt}
		var err error
		raw, present, err = d.scanSetNew(ctx, d.scanKey(ns, r.Key), packEvent(&fresh), r.ExpiresAt)
		if err != nil {
			return driver.ClaimReply{}, err
		}
		if !present {
			// Stored as new: the portable layer reads only Attempts back.
			inserted = true
			reply = driver.ClaimReply{Outcome: driver.ClaimAcquired,
				Event: driver.Event{Key: r.Key, Status: driver.EventClaimed, Attempts: 1}}
		}
	}
	if !inserted {
		var err error
		inserted, err = d.scanUpdate(ctx, ns, r.Key, r.Now, raw, present, func(cur driver.Event, found bool) (driver.Event, bool, error) {
			var next driver.Event
			var write bool
			var err error
			reply, next, write, err = driver.ApplyClaim(cur, found, r)
			return next, write, err
		})
		if err != nil {
			return driver.ClaimReply{}, err
		}
	}
	if inserted && r.Limit > 0 {
		if err := d.scanOrder(ctx, ns, r.EventWrite); err != nil {
			return driver.ClaimReply{}, err
		}
	}
	return reply, nil
}

// scanOrder adds a new event to its namespace's order under an event limit
// and deletes the oldest events beyond the limit.
func (d *Driver) scanOrder(ctx context.Context, ns string, w driver.EventWrite) error {
	out, err := d.run(ctx, scOrderScript, []string{d.nsBase(ns, domEvents) + evOrder},
		[]string{us(w.Now), w.Key, strconv.Itoa(w.Limit), indexExpiry(w.ExpiresAt)})
	if err != nil || len(out) == 0 {
		return err
	}
	execs := make([]rueidis.LuaExec, 0, len(out)/2)
	for i := 0; i+1 < len(out); i += 2 {
		score, err := strconv.ParseFloat(out[i+1], 64)
		if err != nil {
			return errCorrupt
		}
		execs = append(execs, rueidis.LuaExec{Keys: []string{d.scanKey(ns, out[i])},
			Args: []string{strconv.FormatInt(int64(score), 10)}})
	}
	for _, res := range scEvictScript.ExecMulti(ctx, d.client, execs...) {
		if err := res.Error(); err != nil {
			return d.fail(ctx, err)
		}
	}
	return nil
}

func (d *Driver) scanFenced(ctx context.Context, s *rueidis.Lua, ns, key string, args []string) error {
	if err := d.check(); err != nil {
		return err
	}
	n, _, err := d.runEvent(ctx, s, []string{d.scanKey(ns, key)}, args)
	if err != nil {
		return err
	}
	if n != 1 {
		return driver.ErrNotOwner
	}
	return nil
}

func (d *Driver) scanRelease(ctx context.Context, ns string, r driver.ReleaseRequest) error {
	if err := d.check(); err != nil {
		return err
	}
	_, err := d.scanUpdate(ctx, ns, r.Key, r.Now, "", false, func(cur driver.Event, found bool) (driver.Event, bool, error) {
		next, err := driver.ApplyReleaseEvent(cur, found, r)
		return next, err == nil, err
	})
	return err
}

func (d *Driver) scanRetry(ctx context.Context, ns, key string, now, expiresAt time.Time) error {
	if err := d.check(); err != nil {
		return err
	}
	_, err := d.scanUpdate(ctx, ns, key, now, "", false, func(cur driver.Event, found bool) (driver.Event, bool, error) {
		next, err := driver.ApplyRetryEvent(cur, found, expiresAt)
		return next, err == nil, err
	})
	return err
}

func (d *Driver) scanForget(ctx context.Context, ns, key string) error {
	if err := d.check(); err != nil {
		return err
	}
	for _, res := range d.client.DoMulti(ctx,
		d.client.B().Del().Key(d.scanKey(ns, key)).Build(),
		d.client.B().Zrem().Key(d.nsBase(ns, domEvents)+evOrder).Member(key).Build()) {
		if err := res.Error(); err != nil {
			return d.fail(ctx, err)
		}
	}
	return nil
}

// scanList walks every master for the namespace's events and returns the
// live ones keep accepts, in the order of driver.EventBefore, at most limit
// (all when limit is 0). It keeps at most twice limit events while walking.
func (d *Driver) scanList(ctx context.Context, ns string, now time.Time, limit int, keep func(*driver.Event) bool) ([]driver.Event, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	var out []driver.Event
	trim := func() {
		// SCAN may return a key twice: sorted, equal neighbours count once.
		out = driver.FirstEvents(out, 0)
		out = slices.CompactFunc(out, func(a, b driver.Event) bool { return a.Key == b.Key && a.CreatedAt.Equal(b.CreatedAt) })
		if limit > 0 && len(out) > limit {
			out = out[:limit]
		}
	}
	err := d.scanMasters(ctx, d.scanPattern(ns), scanCount, func(c rueidis.Client, names []string) error {
		vals, err := d.scanValues(ctx, c, names)
		if err != nil {
			return err
		}
		for i, v := range vals {
			if v == nil {
				continue
			}
			pk, ok := d.parseKey(names[i])
			if !ok || len(pk.rest) < 2 {
				continue
			}
			ev, err := unpackEvent(pk.rest[2:], *v)
			if err != nil {
				return err
			}
			if driver.Live(ev.ExpiresAt, now) && keep(&ev) {
				out = append(out, ev)
				if limit > 0 && len(out) >= 2*limit {
					trim()
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	trim()
	return out, nil
}

// scanValues reads the values of keys, which SCAN found on node c: one
// MGET on a standalone server, a pipeline of GETs on a Cluster (where the
// keys are in different slots). A key gone since is nil.
func (d *Driver) scanValues(ctx context.Context, c rueidis.Client, keys []string) ([]*string, error) {
	out := make([]*string, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	if !d.cluster {
		arr, err := c.Do(ctx, c.B().Mget().Key(keys...).Build()).ToArray()
		if err != nil {
			return nil, d.fail(ctx, err)
		}
		for i := range min(len(arr), len(keys)) {
			if v, err := arr[i].ToString(); err == nil {
				out[i] = &v
			}
		}
		return out, nil
	}
	cmds := make(rueidis.Commands, len(keys))
	for i, k := range keys {
		cmds[i] = c.B().Get().Key(k).Build()
	}
	for i, res := range c.DoMulti(ctx, cmds...) {
		v, err := res.ToString()
		if isNil(err) {
			continue
		}
		if err != nil {
			return nil, d.fail(ctx, err)
		}
		out[i] = &v
	}
	return out, nil
}
