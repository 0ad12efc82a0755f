package mem

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/botstate/botstate/driver"
)

// nsIncidents is one namespace's incident store, behind its own mutex:
// incidents are not a hot path, and a move touches two channels at once.
type nsIncidents struct {
	mu       sync.Mutex
	alerts   map[[2]string]driver.AlertRecord         // (channel, unique id)
	issues   map[string]map[string]driver.IssueRecord // channel -> unique id -> issue
	mappings map[[2]string]driver.MoveMappingRecord   // (channel, correlation id)
	states   map[string][]byte                        // channel -> processing state
}

func (d *Driver) inc(ns string) *nsIncidents {
	d.incMu.RLock()
	in, ok := d.incidents[ns]
	d.incMu.RUnlock()
	if ok {
		return in
	}
	d.incMu.Lock()
	defer d.incMu.Unlock()
	if in, ok = d.incidents[ns]; !ok {
		in = &nsIncidents{alerts: map[[2]string]driver.AlertRecord{}, issues: map[string]map[string]driver.IssueRecord{},
			mappings: map[[2]string]driver.MoveMappingRecord{}, states: map[string][]byte{}}
		d.incidents[ns] = in
	}
	return in
}

// with runs fn on the namespace's incidents under their mutex.
func (d *Driver) with(ns string, fn func(in *nsIncidents)) error {
	if err := d.check(); err != nil {
		return err
	}
	in := d.inc(ns)
	in.mu.Lock()
	defer in.mu.Unlock()
	fn(in)
	return nil
}

func (in *nsIncidents) put(r driver.IssueRecord) {
	ch := in.issues[r.Channel]
	if ch == nil {
		ch = map[string]driver.IssueRecord{}
		in.issues[r.Channel] = ch
	}
	r.Body = driver.Clone(r.Body)
	ch[r.UniqueID] = r
}

func (in *nsIncidents) remove(channel, uid string) {
	if ch := in.issues[channel]; ch != nil {
		delete(ch, uid)
		if len(ch) == 0 {
			delete(in.issues, channel)
		}
	}
}

func (in *nsIncidents) match(channel string, now time.Time, keep func(*driver.IssueRecord) bool) []driver.IssueRecord {
	var out []driver.IssueRecord
	for _, r := range in.issues[channel] {
		if driver.Live(r.ExpiresAt, now) && keep(&r) {
			r.Body = driver.Clone(r.Body)
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b driver.IssueRecord) int { return strings.Compare(a.UniqueID, b.UniqueID) })
	return out
}

// SaveAlert implements driver.Incidents.
func (d *Driver) SaveAlert(_ context.Context, ns string, a driver.AlertRecord) error {
	return d.with(ns, func(in *nsIncidents) {
		a.Body = driver.Clone(a.Body)
		in.alerts[[2]string{a.Channel, a.UniqueID}] = a
	})
}

// SaveIssues implements driver.Incidents.
func (d *Driver) SaveIssues(_ context.Context, ns string, issues []driver.IssueRecord) error {
	return d.with(ns, func(in *nsIncidents) {
		for _, r := range issues {
			in.put(r)
		}
	})
}

// MoveIssue implements driver.Incidents.
func (d *Driver) MoveIssue(_ context.Context, ns string, issue driver.IssueRecord, source string) error {
	return d.with(ns, func(in *nsIncidents) {
		in.remove(source, issue.UniqueID)
		in.put(issue)
	})
}

// FindOpenIssues implements driver.Incidents.
func (d *Driver) FindOpenIssues(_ context.Context, ns, channel, correlationID string, now time.Time) (out []driver.IssueRecord, err error) {
	err = d.with(ns, func(in *nsIncidents) {
		out = in.match(channel, now, func(r *driver.IssueRecord) bool { return r.Open && r.CorrelationID == correlationID })
	})
	return out, err
}

// FindIssuesByPostID implements driver.Incidents.
func (d *Driver) FindIssuesByPostID(_ context.Context, ns, channel, postID string, now time.Time) (out []driver.IssueRecord, err error) {
	err = d.with(ns, func(in *nsIncidents) {
		out = in.match(channel, now, func(r *driver.IssueRecord) bool { return r.PostID == postID })
	})
	return out, err
}

// ActiveChannels implements driver.Incidents.
func (d *Driver) ActiveChannels(_ context.Context, ns string, now time.Time) (out []string, err error) {
	err = d.with(ns, func(in *nsIncidents) {
		for ch, issues := range in.issues {
			for _, r := range issues {
				if r.Open && driver.Live(r.ExpiresAt, now) {
					out = append(out, ch)
					break
				}
			}
		}
	})
	slices.Sort(out)
	return out, err
}

// OpenIssuesInChannel implements driver.Incidents.
func (d *Driver) OpenIssuesInChannel(_ context.Context, ns, channel string, now time.Time) (out []driver.IssueRecord, err error) {
	err = d.with(ns, func(in *nsIncidents) {
		out = in.match(channel, now, func(r *driver.IssueRecord) bool { return r.Open })
	})
	return out, err
}

// SaveMoveMapping implements driver.Incidents.
func (d *Driver) SaveMoveMapping(_ context.Context, ns string, m driver.MoveMappingRecord) error {
	return d.with(ns, func(in *nsIncidents) {
		m.Body = driver.Clone(m.Body)
		in.mappings[[2]string{m.Channel, m.CorrelationID}] = m
	})
}

// FindMoveMapping implements driver.Incidents.
func (d *Driver) FindMoveMapping(_ context.Context, ns, channel, correlationID string) (body []byte, ok bool, err error) {
	err = d.with(ns, func(in *nsIncidents) {
		var m driver.MoveMappingRecord
		m, ok = in.mappings[[2]string{channel, correlationID}]
		body = driver.Clone(m.Body)
	})
	return body, ok, err
}

// DeleteMoveMapping implements driver.Incidents.
func (d *Driver) DeleteMoveMapping(_ context.Context, ns, channel, correlationID string) error {
	return d.with(ns, func(in *nsIncidents) { delete(in.mappings, [2]string{channel, correlationID}) })
}

// SaveProcessingState implements driver.Incidents.
func (d *Driver) SaveProcessingState(_ context.Context, ns, channel string, body []byte) error {
	return d.with(ns, func(in *nsIncidents) { in.states[channel] = driver.Clone(body) })
}

// FindProcessingState implements driver.Incidents.
func (d *Driver) FindProcessingState(_ context.Context, ns, channel string) (body []byte, ok bool, err error) {
	err = d.with(ns, func(in *nsIncidents) {
		body, ok = in.states[channel]
		body = driver.Clone(body)
	})
	return body, ok, err
}

// DropIncidents implements driver.Incidents.
func (d *Driver) DropIncidents(_ context.Context, ns string) error {
	return d.with(ns, func(in *nsIncidents) {
		clear(in.alerts)
		clear(in.issues)
		clear(in.mappings)
		clear(in.states)
	})
}

func (d *Driver) sweepIncidents(now time.Time) {
	d.incMu.RLock()
	all := make([]*nsIncidents, 0, len(d.incidents))
	for _, in := range d.incidents {
		all = append(all, in)
	}
	d.incMu.RUnlock()
	for _, in := range all {
		in.mu.Lock()
		for k, a := range in.alerts {
			if !driver.Live(a.ExpiresAt, now) {
				delete(in.alerts, k)
			}
		}
		for _, ch := range in.issues {
			for uid, r := range ch {
				if !driver.Live(r.ExpiresAt, now) {
					in.remove(r.Channel, uid)
				}
			}
		}
		in.mu.Unlock()
	}
}
