package redis

import (
	"context"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/botstate/botstate/driver"
)

// Browse implements driver.Browser. Conversations and locks are spread
// over slots by their keys' hashes and no index orders them, so a page is
// a SCAN of every master for the names of the kind's keys in the namespace
// (names only, no values), the page's keys picked from them, then one read
// per item of the page. It costs a walk of the key space's names, far less
// than Export's read of every value.
func (d *Driver) Browse(ctx context.Context, ns string, kind driver.Kind, after string, limit int, now time.Time) ([]driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	var dom, mark string
	switch kind {
	case driver.KindConversation:
		dom = domConv
	case driver.KindLock:
		dom, mark = domLocks, "m" // the lock's record; its queue is beside it
	default:
		return nil, driver.BrowseKindError(kind)
	}
	pattern := globEscape(d.prefix) + "{" + globEscape(ns) + ":" + dom + ":*}" + mark + "*"
	var out []driver.Record
	// An item can be gone by the time it is read (expired, or a lock
	// with nothing held or queued): read on until the page is full or the
	// names run out.
	for len(out) < limit {
		want := limit - len(out)
		keys, err := d.pageKeys(ctx, pattern, mark, after, want)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			after = k
			if kind == driver.KindConversation {
				c, ok, err := d.GetConversation(ctx, ns, k, now)
				if err != nil {
					return nil, err
				}
				if ok {
					out = append(out, driver.ConversationRecord(ns, c))
				}
				continue
			}
			st, ok, err := d.InspectLock(ctx, ns, k, now)
			if err != nil {
				return nil, err
			}
			if ok && !driver.LockIdle(&st) {
				out = append(out, driver.LockRecord(ns, st))
			}
		}
		if len(keys) < want {
			break
		}
	}
	return out, nil
}

// pageKeys scans every master for names matching pattern and returns, in
// order, the first limit keys (the part of a name after its tag and mark)
// that sort after after.
func (d *Driver) pageKeys(ctx context.Context, pattern, mark, after string, limit int) ([]string, error) {
	p := driver.NewPager(after, limit, func(k *string) string { return *k })
	err := d.scanMasters(ctx, pattern, browseScanCount, func(_ rueidis.Client, names []string) error {
		for _, name := range names {
			// prefix{ns:dom:hash}<mark><key>
			_, rest, ok := strings.Cut(strings.TrimPrefix(name, d.prefix), "}"+mark)
			if ok && p.Wants(rest) {
				p.Add(rest) // a name SCAN returns twice counts once
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p.Page(), nil
}

// browseScanCount is the COUNT of each SCAN of Browse: names only come
// back, few of them match, so large steps save round trips.
const browseScanCount = 20000
