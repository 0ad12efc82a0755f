package mem

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/botstate/botstate/driver"
)

// pager gathers the first limit items, in key order, of a namespace's
// items whose keys sort after after, from a walk in no order: once twice
// the page is gathered it is cut to the page, and keys that sort after its
// last are passed over (wants), so only what can still be on the page is
// copied.
type pager[T any] struct {
	ns, after string
	limit     int
	key       func(*T) string
	items     []T
	cutoff    string
	cut       bool
}

func newPager[T any](ns, after string, limit int, key func(*T) string) *pager[T] {
	return &pager[T]{ns: ns, after: after, limit: limit, key: key}
}

// wants reports whether the item at k can be on the page.
func (p *pager[T]) wants(k mkey) bool {
	return k.ns == p.ns && k.key > p.after && (!p.cut || k.key < p.cutoff)
}

func (p *pager[T]) add(v T) {
	p.items = append(p.items, v)
	if len(p.items) >= 2*p.limit {
		p.trim()
	}
}

func (p *pager[T]) trim() {
	slices.SortFunc(p.items, func(a, b T) int { return strings.Compare(p.key(&a), p.key(&b)) })
	if len(p.items) > p.limit {
		p.items = p.items[:p.limit]
	}
	if len(p.items) == p.limit && p.limit > 0 {
		p.cutoff, p.cut = p.key(&p.items[p.limit-1]), true
	}
}

// page returns the page.
func (p *pager[T]) page() []T {
	p.trim()
	return p.items
}

// Browse implements driver.Browser. The maps keep no order, so a page is a
// walk of every shard (a pager keeps what can be on it).
func (d *Driver) Browse(_ context.Context, ns string, kind driver.Kind, after string, limit int, now time.Time) ([]driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	if !driver.Browsable(kind) {
		return nil, driver.BrowseKindError(kind)
	}
	p := newPager(ns, after, limit, func(r *driver.Record) string { return r.Key })
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		if kind == driver.KindConversation {
			for k, c := range s.convs {
				if p.wants(k) && driver.Live(c.ExpiresAt, now) {
					p.add(driver.ConversationRecord(ns, copyConv(c)))
				}
			}
		} else {
			for k, st := range s.locks {
				if !p.wants(k) || driver.LockIdle(st) {
					continue
				}
				c := copyLock(st)
				driver.PruneLock(&c, now)
				if !driver.LockIdle(&c) {
					p.add(driver.LockRecord(ns, c))
				}
			}
		}
		s.mu.Unlock()
	}
	return p.page(), nil
}
