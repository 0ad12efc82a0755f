package mem

import (
	"context"
	"time"

	"github.com/botstate/botstate/driver"
)

// Browse implements driver.Browser. The maps keep no order, so a page is a
// walk of every shard (a driver.Pager keeps what can be on it).
func (d *Driver) Browse(_ context.Context, ns string, kind driver.Kind, after string, limit int, now time.Time) ([]driver.Record, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	if !driver.Browsable(kind) {
		return nil, driver.BrowseKindError(kind)
	}
	p := driver.NewPager(after, limit, func(r *driver.Record) string { return r.Key })
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		if kind == driver.KindConversation {
			for k, c := range s.convs {
				if k.ns == ns && p.Wants(k.key) && driver.Live(c.ExpiresAt, now) {
					p.Add(driver.ConversationRecord(ns, copyConv(c)))
				}
			}
		} else {
			for k, st := range s.locks {
				if k.ns != ns || !p.Wants(k.key) || driver.LockIdle(st) {
					continue
				}
				c := copyLock(st)
				driver.PruneLock(&c, now)
				if !driver.LockIdle(&c) {
					p.Add(driver.LockRecord(ns, c))
				}
			}
		}
		s.mu.Unlock()
	}
	return p.Page(), nil
}
