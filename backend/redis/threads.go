package redis

import (
	"context"
	"strconv"
	"time"

	"github.com/botstate/botstate/driver"
)

// ---- subscriptions ----
//
// A namespace's subscriptions share one slot: a hash thread ->
// pk{createdAt, expiresAt}, a lex-ordered zset for listing after a thread,
// and a zset by expiry for garbage collection.

func (d *Driver) subKeys(ns string) []string {
	base := d.nsBase(ns, domSubs)
	return []string{base + "h", base + "o", base + "x"}
}

// Subscribe implements driver.Threads in one script.
func (d *Driver) Subscribe(ctx context.Context, ns, thread string, now, expiresAt time.Time) error {
	_, err := d.run(ctx, subscribeScript, d.subKeys(ns), []string{us(now), thread, us(expiresAt), ""})
	return err
}

// Unsubscribe implements driver.Threads in one script.
func (d *Driver) Unsubscribe(ctx context.Context, ns, thread string) error {
	_, err := d.run(ctx, unsubscribeScript, d.subKeys(ns), []string{thread})
	return err
}

// IsSubscribed implements driver.Threads with one HGET.
func (d *Driver) IsSubscribed(ctx context.Context, ns, thread string, now time.Time) (bool, error) {
	if err := d.check(); err != nil {
		return false, err
	}
	v, err := d.do(ctx, d.client.B().Hget().Key(d.subKeys(ns)[0]).Field(thread).Build()).ToString()
	if err != nil {
		if isNil(err) {
			return false, nil
		}
		return false, d.fail(ctx, err)
	}
	f, err := unpack(v, 2)
	if err != nil {
		return false, err
	}
	exp, err := fromUS(f[1])
	if err != nil {
		return false, err
	}
	return driver.Live(exp, now), nil
}

// ListSubscriptions implements driver.Threads in one script.
func (d *Driver) ListSubscriptions(ctx context.Context, ns, after string, limit int, now time.Time) ([]driver.Subscription, error) {
	out, err := d.run(ctx, listSubsScript, d.subKeys(ns), []string{us(now), after, strconv.Itoa(limit)})
	if err != nil {
		return nil, err
	}
	subs := make([]driver.Subscription, 0, len(out)/3)
	for i := 0; i+2 < len(out); i += 3 {
		c, err1 := fromUS(out[i+1])
		x, err2 := fromUS(out[i+2])
		if err1 != nil || err2 != nil {
			return nil, errCorrupt
		}
		subs = append(subs, driver.Subscription{Thread: out[i], CreatedAt: c, ExpiresAt: x})
	}
	return subs, nil
}

// ---- cache ----
//
// A cache key's value, list and list expiry share one slot (the tag hashes
// the cache key), so CacheDelete removes both in one DEL.

func (d *Driver) cacheKeys(ns, key string) []string {
	base := d.keyBase(ns, domCache, key)
	return []string{base + "v" + key, base + "l" + key, base + "m" + key}
}

// CacheGet implements driver.Threads with one GET.
func (d *Driver) CacheGet(ctx context.Context, ns, key string, now time.Time) ([]byte, bool, error) {
	if err := d.check(); err != nil {
		return nil, false, err
	}
	v, err := d.do(ctx, d.client.B().Get().Key(d.cacheKeys(ns, key)[0]).Build()).ToString()
	if err != nil {
		if isNil(err) {
			return nil, false, nil
		}
		return nil, false, d.fail(ctx, err)
	}
	f, err := unpack(v, 2)
	if err != nil {
		return nil, false, err
	}
	exp, err := fromUS(f[0])
	if err != nil {
		return nil, false, err
	}
	if !driver.Live(exp, now) {
		return nil, false, nil
	}
	return []byte(f[1]), true, nil
}

// CacheSet implements driver.Threads: one SET (with PXAT), or one script
// when only a missing or lapsed value may be replaced.
func (d *Driver) CacheSet(ctx context.Context, ns, key string, value []byte, now, expiresAt time.Time, onlyIfAbsent bool) (bool, error) {
	k := d.cacheKeys(ns, key)[:1]
	v := pack(us(expiresAt), string(value))
	if onlyIfAbsent {
		out, err := d.run(ctx, cacheSetNXScript, k, []string{us(now), v, us(expiresAt)})
		if err != nil {
			return false, err
		}
		return len(out) > 0 && out[0] == "1", nil
	}
	if err := d.check(); err != nil {
		return false, err
	}
	set := d.client.B().Set().Key(k[0]).Value(v)
	var err error
	if expiresAt.IsZero() {
		err = d.do(ctx, set.Build()).Error()
	} else {
		err = d.do(ctx, set.PxatMillisecondsTimestamp(msCeil(expiresAt)).Build()).Error()
	}
	return err == nil, d.fail(ctx, err)
}

// msCeil is an absolute expiry in Unix milliseconds, rounded up so that
// Redis never drops an item before the caller's clock says it lapsed.
func msCeil(t time.Time) int64 {
	n := t.UnixMicro()
	return (n + 999) / 1000
}

// CacheDelete implements driver.Threads with one DEL of value and list.
func (d *Driver) CacheDelete(ctx context.Context, ns, key string) error {
	return d.del(ctx, d.cacheKeys(ns, key)...)
}

// ListAppend implements driver.Threads in one script.
func (d *Driver) ListAppend(ctx context.Context, ns, key string, value []byte, maxLen int, now, expiresAt time.Time) (int, error) {
	out, err := d.run(ctx, listAppendScript, d.cacheKeys(ns, key), []string{us(now), string(value), strconv.Itoa(maxLen), us(expiresAt)})
	if err != nil {
		return 0, err
	}
	if len(out) == 0 {
		return 0, errCorrupt
	}
	return strconv.Atoi(out[0])
}

// ListRange implements driver.Threads in one script (the list's expiry and
// its values are read together).
func (d *Driver) ListRange(ctx context.Context, ns, key string, now time.Time) ([][]byte, error) {
	out, err := d.run(ctx, listRangeScript, d.cacheKeys(ns, key), []string{us(now)})
	if err != nil || len(out) == 0 {
		return nil, err
	}
	if len(out) == 1 {
		return nil, nil
	}
	vals := make([][]byte, len(out)-1)
	for i, v := range out[1:] {
		vals[i] = []byte(v)
	}
	return vals, nil
}
