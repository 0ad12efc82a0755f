package mem

import (
	"context"
	"time"

	"github.com/botstate/botstate/driver"
)

// Export implements driver.Snapshots. Each shard is copied under its lock and
// emitted after, so a slow writer never holds a shard.
func (d *Driver) Export(ctx context.Context, ns string, now time.Time, emit func(*driver.Record) error) error {
	if err := d.check(); err != nil {
		return err
	}
	want := func(k mkey) bool { return ns == "" || k.ns == ns }
	for i := range d.shards {
		if err := ctx.Err(); err != nil {
			return err
		}
		s := &d.shards[i]
		var recs []driver.Record
		s.mu.Lock()
		for k, e := range s.events {
			if want(k) && driver.Live(e.ExpiresAt, now) {
				recs = append(recs, driver.EventRecord(k.ns, copyEvent(e)))
			}
		}
		for k, c := range s.convs {
			if want(k) && driver.Live(c.ExpiresAt, now) {
				recs = append(recs, driver.ConversationRecord(k.ns, copyConv(c)))
			}
		}
		for k, v := range s.subs {
			if want(k) && driver.Live(v.ExpiresAt, now) {
				recs = append(recs, driver.Record{Kind: driver.KindSubscription, NS: k.ns, Key: v.Thread, CreatedAt: v.CreatedAt, ExpiresAt: v.ExpiresAt})
			}
		}
		for scope, m := range s.docs {
			for k, v := range m {
				if want(k) && driver.Live(v.ExpiresAt, now) {
					recs = append(recs, driver.Record{Kind: driver.DocKind(driver.Scope(scope)), NS: k.ns, Key: v.ID,
						Data: driver.Clone(v.Data), UpdatedAt: v.UpdatedAt, ExpiresAt: v.ExpiresAt})
				}
			}
		}
		for k, v := range s.values {
			if want(k) && driver.Live(v.expires, now) {
				recs = append(recs, driver.Record{Kind: driver.KindCacheValue, NS: k.ns, Key: k.key, Payload: driver.Clone(v.v), ExpiresAt: v.expires})
			}
		}
		for k, l := range s.lists {
			if want(k) && driver.Live(l.expires, now) {
				vals := make([][]byte, len(l.vals))
				for j, v := range l.vals {
					vals[j] = driver.Clone(v)
				}
				recs = append(recs, driver.Record{Kind: driver.KindCacheList, NS: k.ns, Key: k.key, Values: vals, ExpiresAt: l.expires})
			}
		}
		for k, l := range s.locks {
			if !want(k) {
				continue
			}
			st := copyLock(l)
			driver.PruneLock(&st, now)
			if !driver.LockIdle(&st) || driver.Live(st.ExpiresAt, now) {
				recs = append(recs, driver.LockRecord(k.ns, st))
			}
		}
		s.mu.Unlock()
		for j := range recs {
			if err := emit(&recs[j]); err != nil {
				return err
			}
		}
	}
	return d.exportIncidents(ns, now, emit)
}

func (d *Driver) exportIncidents(ns string, now time.Time, emit func(*driver.Record) error) error {
	d.incMu.RLock()
	names := make([]string, 0, len(d.incidents))
	for n := range d.incidents {
		if ns == "" || n == ns {
			names = append(names, n)
		}
	}
	d.incMu.RUnlock()
	for _, n := range names {
		var recs []driver.Record
		_ = d.with(n, func(in *nsIncidents) {
			for _, a := range in.alerts {
				if driver.Live(a.ExpiresAt, now) {
					recs = append(recs, driver.AlertRecordOf(n, a))
				}
			}
			for _, ch := range in.issues {
				for _, r := range ch {
					if driver.Live(r.ExpiresAt, now) {
						recs = append(recs, driver.IssueRecordOf(n, r))
					}
				}
			}
			for _, m := range in.mappings {
				recs = append(recs, driver.MoveMappingRecordOf(n, m))
			}
			for ch, b := range in.states {
				recs = append(recs, driver.Record{Kind: driver.KindProcessingState, NS: n, Channel: ch, Body: string(b)})
			}
		})
		for j := range recs {
			if err := emit(&recs[j]); err != nil {
				return err
			}
		}
	}
	return nil
}

// Import implements driver.Snapshots. Records were validated by the caller,
// and nothing here can fail halfway, so an import is all or nothing.
func (d *Driver) Import(_ context.Context, recs []driver.Record) error {
	if err := d.check(); err != nil {
		return err
	}
	for i := range recs {
		r := &recs[i]
		if isIncident(r.Kind) {
			d.importIncident(r)
			continue
		}
		s, k := d.shard(r.Key), mkey{r.NS, r.Key}
		s.mu.Lock()
		switch r.Kind {
		case driver.KindEvent:
			ev, _ := r.Event()
			ev.Payload, ev.Result = driver.Clone(ev.Payload), driver.Clone(ev.Result)
			d.dropEvent(s, k)
			s.events[k] = &ev
			s.track(k, &ev)
		case driver.KindConversation:
			c := r.Conversation()
			c.Data = driver.Clone(c.Data)
			s.convs[k] = &c
		case driver.KindSubscription:
			s.subs[k] = &driver.Subscription{Thread: r.Key, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}
		case driver.KindThreadState, driver.KindChannelState:
			scope := driver.ScopeThread
			if r.Kind == driver.KindChannelState {
				scope = driver.ScopeChannel
			}
			s.docs[scope][k] = &driver.Doc{ID: r.Key, Data: driver.Clone(r.Data), UpdatedAt: r.UpdatedAt, ExpiresAt: r.ExpiresAt}
		case driver.KindCacheValue:
			s.values[k] = &value{v: driver.Clone(r.Payload), expires: r.ExpiresAt}
		case driver.KindCacheList:
			vals := make([][]byte, len(r.Values))
			for j, v := range r.Values {
				vals[j] = driver.Clone(v)
			}
			s.lists[k] = &list{vals: vals, expires: r.ExpiresAt}
		case driver.KindLock:
			st := r.Lock()
			st = copyLock(&st)
			s.locks[k] = &st
		}
		s.mu.Unlock()
	}
	return nil
}

func isIncident(k driver.Kind) bool {
	switch k {
	case driver.KindAlert, driver.KindIssue, driver.KindMoveMapping, driver.KindProcessingState:
		return true
	}
	return false
}

func (d *Driver) importIncident(r *driver.Record) {
	_ = d.with(r.NS, func(in *nsIncidents) {
		switch r.Kind {
		case driver.KindAlert:
			a := r.Alert()
			in.alerts[[2]string{a.Channel, a.UniqueID}] = a
		case driver.KindIssue:
			in.put(r.Issue())
		case driver.KindMoveMapping:
			m := r.MoveMapping()
			in.mappings[[2]string{m.Channel, m.CorrelationID}] = m
		case driver.KindProcessingState:
			in.states[r.Channel] = []byte(r.Body)
		}
	})
}
