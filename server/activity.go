package server

import (
	"slices"
	"sync"
	"time"
)

// activityMinutes is how many minutes of claims and completions the
// dashboard's chart shows.
const activityMinutes = 60

// maxActivityNamespaces bounds the namespaces the counters remember; past
// it, a new namespace is not counted (the chart of an older one goes on).
const maxActivityNamespaces = 10000

// activity counts, per namespace and minute, the events this server has
// seen claimed (a claim granted) and completed: the dashboard's live chart.
type activity struct {
	mu  sync.Mutex
	now func() time.Time
	ns  map[string]*minutes
}

// minutes is a ring of per-minute counts; at[i] is the minute (Unix
// minutes) slot i counts, so a stale slot reads as zero.
type minutes struct {
	at                 [activityMinutes]int64
	claimed, completed [activityMinutes]int64
}

// ActivityPoint is one minute of the chart.
type ActivityPoint struct {
	Minute    time.Time `json:"minute"`
	Claimed   int64     `json:"claimed"`
	Completed int64     `json:"completed"`
}

func newActivity(now func() time.Time) *activity {
	return &activity{now: now, ns: map[string]*minutes{}}
}

func (a *activity) add(ns string, claimed, completed int64) {
	m := a.now().Unix() / 60
	i := m % activityMinutes
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.ns[ns]
	if r == nil {
		if len(a.ns) >= maxActivityNamespaces {
			return
		}
		r = &minutes{}
		a.ns[ns] = r
	}
	if r.at[i] != m {
		r.at[i], r.claimed[i], r.completed[i] = m, 0, 0
	}
	r.claimed[i] += claimed
	r.completed[i] += completed
}

// series returns the last activityMinutes minutes of ns, oldest first.
func (a *activity) series(ns string) []ActivityPoint {
	now := a.now().Unix() / 60
	out := make([]ActivityPoint, activityMinutes)
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.ns[ns]
	for j := range out {
		m := now - activityMinutes + 1 + int64(j)
		out[j].Minute = time.Unix(m*60, 0).UTC()
		if i := m % activityMinutes; r != nil && r.at[i] == m {
			out[j].Claimed, out[j].Completed = r.claimed[i], r.completed[i]
		}
	}
	return out
}

// namespaces lists the namespaces with counts, sorted.
func (a *activity) namespaces() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.ns))
	for ns := range a.ns {
		out = append(out, ns)
	}
	slices.Sort(out)
	return out
}
