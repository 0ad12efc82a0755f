package postgres

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/botstate/botstate/driver"
)

// New keys (the common case of Claim and Record) are inserted in groups:
// the calls that arrive while earlier inserts are in flight go to the
// server together, as one INSERT ... SELECT FROM unnest(...) ON CONFLICT DO
// NOTHING, which costs the server one statement and one commit for the
// group instead of one each, and the client one round trip. A lone call
// goes out at once, alone, as before: grouping adds no wait, only the
// chance to share the next round trip while the server is busy.
//
// Each row is still decided alone: ON CONFLICT DO NOTHING inserts a key
// only where no row holds it, and a call whose key was not inserted goes
// on to the statement that decides on the stored row, exactly as when its
// own INSERT found the key taken. The group commits as one transaction,
// so a row is either inserted for its caller or not at all.

// insertGroupSQL inserts the rows of a group, one per element of the
// arrays, and returns the keys it inserted. An empty token and the zero
// time (noTime) stand for NULL: arrays of plain strings and times encode
// without reflection, which arrays of pointers do not.
const insertGroupSQL = `
INSERT INTO events (namespace, key, status, payload, token, attempts, created_at, lease_until, expires_at)
SELECT n, k, s, p, nullif(t, ''), a, c, nullif(l, '` + noTime + `'), nullif(x, '` + noTime + `')
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::integer[],
              $7::timestamptz[], $8::timestamptz[], $9::timestamptz[]) AS u(n, k, s, p, t, a, c, l, x)
ON CONFLICT DO NOTHING
RETURNING namespace, key`

// noTime is Go's zero time as PostgreSQL writes it.
const noTime = "0001-01-01 00:00:00+00"

const (
	// maxGroup bounds the rows of one statement.
	maxGroup = 256
	// minGroup is the fewest rows a group starts with while another is in
	// flight: with a worker per eight connections, about each worker's
	// share of callers when every connection is busy. Measured at 16
	// clients (BENCHMARKS.md): 4 and 12 were slower than 8.
	minGroup = 8
	// gatherFor bounds how long inserts are held for a larger group.
	gatherFor = 500 * time.Microsecond
	// groupTimeout bounds a group's statement when some caller has no
	// deadline; each caller stops waiting at its own.
	groupTimeout = time.Minute
)

// newEvent is one call's insert of a new key.
type newEvent struct {
	ctx             context.Context
	ns, key         string
	claimed         bool // claimed with token and lease; else recorded
	payload         []byte
	token           string
	now, lease, exp time.Time
	inserted        bool
	err             error
	done            chan struct{}
}

// inserter groups the inserts of new keys. Up to max workers each send
// one group at a time: a call queues its insert and wakes an idle worker
// (or starts one), and a worker takes everything queued, up to maxGroup,
// whenever it is free. Long-lived workers keep their grown stacks and
// their buffers.
type inserter struct {
	d       *Driver
	mu      sync.Mutex
	queue   []*newEvent
	workers int // started
	idle    int // waiting for wake
	flying  int // groups in flight
	max     int
	stopped bool
	wake    chan struct{}
	stop    chan struct{}
	wg      sync.WaitGroup
	// For tests: the statements sent, the rows they carried, and the
	// groups the server refused and that went row by row.
	groups, rows, refused atomic.Int64
}

func newInserter(d *Driver) *inserter {
	// A group in flight per eight connections leaves most of the pool to
	// other calls, and keeps groups large when every connection is busy.
	m := max(1, int(d.pool.Config().MaxConns)/8)
	return &inserter{d: d, max: m, wake: make(chan struct{}, m), stop: make(chan struct{})}
}

// insert inserts e's key unless a row holds it, and reports whether it
// did. The error is the group's, or the caller's context's.
func (in *inserter) insert(e *newEvent) (bool, error) {
	e.done = make(chan struct{})
	in.mu.Lock()
	if in.stopped {
		in.mu.Unlock()
		return false, driver.ErrClosed
	}
	in.queue = append(in.queue, e)
	switch {
	case in.idle > 0:
		in.idle--
		in.wake <- struct{}{}
	case in.workers < in.max:
		in.workers++
		in.wg.Add(1)
		go in.work()
	}
	in.mu.Unlock()
	select {
	case <-e.done:
		return e.inserted, e.err
	case <-e.ctx.Done():
		return false, e.ctx.Err()
	}
}

// work runs groups until close, and then what is left.
func (in *inserter) work() {
	defer in.wg.Done()
	var buf groupBuffers
	gather := time.NewTimer(time.Hour)
	gather.Stop()
	gathering := false // gather runs: inserts are held for a larger group
	all := false       // take what is queued, however few, while a group flies
	for {
		in.mu.Lock()
		group := in.take(all)
		held := group == nil && len(in.queue) > 0
		if group == nil {
			in.idle++
		} else {
			in.flying++
		}
		in.mu.Unlock()
		all = false
		if group != nil {
			if gathering {
				gather.Stop()
				gathering = false
			}
			in.run(group, &buf)
			in.mu.Lock()
			in.flying--
			in.mu.Unlock()
			continue
		}
		// Inserts held for a larger group wait gatherFor at most from
		// when this worker first held them: on a server far away, a group
		// in flight can take long.
		if held && !gathering {
			gather.Reset(gatherFor)
			gathering = true
		}
		var gathered <-chan time.Time
		if gathering {
			gathered = gather.C
		}
		select {
		case <-in.wake:
		case <-gathered:
			gathering = false
			in.mu.Lock()
			select {
			case <-in.wake: // an insert counted this worker out of idle already
			default:
				in.idle--
			}
			in.mu.Unlock()
			all = true
		case <-in.stop:
			in.mu.Lock()
			group := in.take(true)
			in.mu.Unlock()
			if group == nil {
				return
			}
			in.run(group, &buf)
		}
	}
}

// close waits for the workers to finish what is queued.
func (in *inserter) close() {
	in.mu.Lock()
	in.stopped = true
	in.mu.Unlock()
	close(in.stop)
	in.wg.Wait()
}

// take removes up to maxGroup queued inserts, nil when none wait; in.mu
// is held. While another group is in flight, a group waits until
// minGroup inserts are queued (unless all is to go: close, or gatherFor
// has passed): the server is busy anyway, and larger groups cost it and
// the client less per row.
func (in *inserter) take(all bool) []*newEvent {
	n := min(len(in.queue), maxGroup)
	if n == 0 || !all && in.flying > 0 && n < minGroup {
		return nil
	}
	group := in.queue[:n:n]
	if n == len(in.queue) {
		in.queue = nil
	} else {
		in.queue = in.queue[n:]
	}
	return group
}

// run inserts a group and tells each caller its outcome.
func (in *inserter) run(group []*newEvent, buf *groupBuffers) {
	defer func() {
		for _, e := range group {
			close(e.done)
		}
	}()
	live := group[:0:0]
	var seen map[string]struct{}
	for _, e := range group {
		if err := e.ctx.Err(); err != nil {
			e.err = err
			continue
		}
		if len(group) > 1 {
			// Two calls for one key: the first goes in; the second finds
			// the first's row, as it would after it.
			if seen == nil {
				seen = make(map[string]struct{}, len(group))
			}
			k := e.ns + "\x00" + e.key
			if _, dup := seen[k]; dup {
				continue
			}
			seen[k] = struct{}{}
		}
		live = append(live, e)
	}
	if len(live) == 0 {
		return
	}
	// Rows go in key order, so two groups that share keys take their
	// uniqueness locks in the same order and never wait for each other in
	// a cycle (which the server would break after deadlock_timeout by
	// failing one of them).
	slices.SortFunc(live, func(a, b *newEvent) int {
		if c := strings.Compare(a.ns, b.ns); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	ctx, cancel := groupContext(live)
	defer cancel()
	err := in.exec(ctx, live, buf)
	var pe *pgconn.PgError
	if err != nil && len(live) > 1 && errors.As(err, &pe) {
		in.refused.Add(1)
		// The server refused the statement (not the connection): one row
		// may be at fault, so each goes alone and only its own caller
		// hears of it.
		for _, e := range live {
			e.err = in.exec(ctx, []*newEvent{e}, buf)
		}
		return
	}
	if err != nil {
		for _, e := range live {
			e.err = err
		}
	}
}

// groupBuffers are a worker's arrays of insertGroupSQL's parameters.
type groupBuffers struct {
	nss, keys, statuses, tokens []string
	payloads                    [][]byte
	attempts                    []int32
	created, leases, exps       []time.Time
}

// exec runs insertGroupSQL for group and marks the rows it inserted.
func (in *inserter) exec(ctx context.Context, group []*newEvent, b *groupBuffers) error {
	n := len(group)
	b.nss, b.keys, b.statuses, b.tokens = b.nss[:0], b.keys[:0], b.statuses[:0], b.tokens[:0]
	b.payloads, b.attempts, b.created, b.leases, b.exps = b.payloads[:0], b.attempts[:0], b.created[:0], b.leases[:0], b.exps[:0]
	for _, e := range group {
		b.nss, b.keys, b.payloads, b.created = append(b.nss, e.ns), append(b.keys, e.key), append(b.payloads, e.payload), append(b.created, e.now)
		if e.claimed {
			b.statuses, b.tokens, b.attempts, b.leases = append(b.statuses, "claimed"), append(b.tokens, e.token), append(b.attempts, 1), append(b.leases, e.lease)
		} else {
			b.statuses, b.tokens, b.attempts, b.leases = append(b.statuses, "recorded"), append(b.tokens, ""), append(b.attempts, 0), append(b.leases, time.Time{})
		}
		b.exps = append(b.exps, e.exp)
	}
	defer clear(b.payloads) // keep no caller's bytes
	in.groups.Add(1)
	in.rows.Add(int64(n))
	rows, err := in.d.pool.Query(ctx, insertGroupSQL, b.nss, b.keys, b.statuses, b.payloads, b.tokens, b.attempts, b.created, b.leases, b.exps)
	if err != nil {
		return err
	}
	defer rows.Close()
	var byKey map[string]*newEvent
	if n > 8 {
		byKey = make(map[string]*newEvent, n)
		for _, e := range group {
			byKey[e.ns+"\x00"+e.key] = e
		}
	}
	var ns, key string
	for rows.Next() {
		if err := rows.Scan(&ns, &key); err != nil {
			return err
		}
		switch {
		case n == 1:
			group[0].inserted = true
		case byKey != nil:
			if e := byKey[ns+"\x00"+key]; e != nil {
				e.inserted = true
			}
		default:
			for _, e := range group {
				if e.key == key && e.ns == ns {
					e.inserted = true
					break
				}
			}
		}
	}
	return rows.Err()
}

// groupContext is the context of a group's statement: it ends at the
// latest of the callers' deadlines, or after groupTimeout when one has
// none. A caller whose context ends first stops waiting; its row may still
// be inserted, as when a lone statement's context ends after the server
// got it.
func groupContext(group []*newEvent) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, e := range group {
		dl, ok := e.ctx.Deadline()
		if !ok {
			return context.WithTimeout(context.Background(), groupTimeout)
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return context.WithDeadline(context.Background(), latest)
}
