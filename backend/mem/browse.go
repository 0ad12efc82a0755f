package mem

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/botstate/botstate/driver"
)

// Browse implements driver.Browser. The maps keep no order, so a page is a
// walk of every shard that copies only the records that can still be in
// it: once twice the page is gathered, it is cut to the page and records
// that sort after its last key are passed over.
func (d *Driver) Browse(_ context.Context, ns string, kind driver.Kind, after string, limit int, now time.Time) ([]driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	if !driver.Browsable(kind) {
		return nil, driver.BrowseKindError(kind)
	}
	var page []driver.Record
	cutoff, cut := "", false
	trim := func() {
		slices.SortFunc(page, func(a, b driver.Record) int { return strings.Compare(a.Key, b.Key) })
		if len(page) > limit {
			page = page[:limit]
		}
		if len(page) == limit {
			cutoff, cut = page[limit-1].Key, true
		}
	}
	wanted := func(k mkey) bool {
		return k.ns == ns && k.key > after && (!cut || k.key < cutoff)
	}
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		if kind == driver.KindConversation {
			for k, c := range s.convs {
				if wanted(k) && driver.Live(c.ExpiresAt, now) {
					page = append(page, driver.ConversationRecord(ns, copyConv(c)))
					if len(page) >= 2*limit {
						trim()
					}
				}
			}
		} else {
			for k, st := range s.locks {
				if !wanted(k) || driver.LockIdle(st) {
					continue
				}
				c := copyLock(st)
				driver.PruneLock(&c, now)
				if !driver.LockIdle(&c) {
					page = append(page, driver.LockRecord(ns, c))
					if len(page) >= 2*limit {
						trim()
					}
				}
			}
		}
		s.mu.Unlock()
	}
	trim()
	return page, nil
}
