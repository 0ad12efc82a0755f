// Package mem is the in-memory botstate backend, registered as "mem://".
//
// State lives in the process: sharded maps, each shard behind its own mutex,
// so no lock is global on the hot paths. Expired items vanish from reads at
// once and are reaped by a background sweeper that stops on Close. With an
// event limit, a per-namespace FIFO bounds the number of event keys.
//
// It is the backend for tests and for one-process bots that can afford to
// lose their state on restart; file:// keeps it across restarts.
package mem

import (
	"context"
	"hash/maphash"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/botstate/botstate/driver"
)

func init() { driver.Register("mem", Open) }

const shardCount = 64

// defaultSweep is how often expired items are reaped when the store does not
// say; reads never depend on it.
const defaultSweep = 10 * time.Second

type mkey struct{ ns, key string }

type shard struct {
	mu     sync.Mutex
	events map[mkey]*driver.Event
	// open holds the events that are not completed, the only
	// ones a recovery listing (Pending, Expired, Due, Failed) can return,
	// so a listing costs the same however many completed events are held.
	open   map[mkey]*driver.Event
	seqs   map[mkey]uint64 // insertion order, only for namespaces with a limit
	convs  map[mkey]*driver.Conversation
	subs   map[mkey]*driver.Subscription
	docs   [3]map[mkey]*driver.Doc // indexed by driver.Scope
	values map[mkey]*value
	lists  map[mkey]*list
	locks  map[mkey]*driver.LockState
	_      [64]byte // keep neighbouring shards' mutexes off one cache line
}

type value struct {
	v       []byte
	expires time.Time
}

type list struct {
	vals    [][]byte
	expires time.Time
}

// Driver is the in-memory backend.
type Driver struct {
	seed   maphash.Seed
	shards [shardCount]shard
	orders sync.Map // ns -> *eventOrder
	seq    atomic.Uint64

	incMu     sync.RWMutex
	incidents map[string]*nsIncidents

	closed atomic.Bool
	stop   chan struct{}
	wg     sync.WaitGroup
	clock  func() time.Time
}

var _ driver.Driver = (*Driver)(nil)

// Open opens an empty in-memory store. The URL takes no host, path or options.
func Open(_ context.Context, u *url.URL, cfg driver.Config) (driver.Driver, error) {
	if u.Host != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, &urlError{u.String()}
	}
	return New(cfg), nil
}

type urlError struct{ u string }

func (e *urlError) Error() string {
	return "mem: URL " + e.u + " takes no host, path or options (use mem://)"
}
func (e *urlError) Unwrap() error { return driver.ErrInvalidArgument }

// New returns an empty in-memory driver with its sweeper running.
func New(cfg driver.Config) *Driver {
	d := &Driver{seed: maphash.MakeSeed(), incidents: map[string]*nsIncidents{}, stop: make(chan struct{}), clock: cfg.Clock}
	if d.clock == nil {
		d.clock = time.Now
	}
	for i := range d.shards {
		s := &d.shards[i]
		s.events = map[mkey]*driver.Event{}
		s.open = map[mkey]*driver.Event{}
		s.seqs = map[mkey]uint64{}
		s.convs = map[mkey]*driver.Conversation{}
		s.subs = map[mkey]*driver.Subscription{}
		for j := range s.docs {
			s.docs[j] = map[mkey]*driver.Doc{}
		}
		s.values = map[mkey]*value{}
		s.lists = map[mkey]*list{}
		s.locks = map[mkey]*driver.LockState{}
	}
	every := cfg.SweepInterval
	if every <= 0 {
		every = defaultSweep
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		driver.Every(d.stop, every, func() { d.Sweep(d.clock()) })
	}()
	return d
}

func (d *Driver) shard(key string) *shard {
	return &d.shards[maphash.String(d.seed, key)&(shardCount-1)]
}

// Close stops the sweeper; later calls return ErrClosed.
func (d *Driver) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	close(d.stop)
	d.wg.Wait()
	return nil
}

func (d *Driver) check() error {
	if d.closed.Load() {
		return driver.ErrClosed
	}
	return nil
}

// Sweep removes every item expired at now, one shard at a time.
func (d *Driver) Sweep(now time.Time) {
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		for k, e := range s.events {
			if !driver.Live(e.ExpiresAt, now) {
				d.dropEvent(s, k)
			}
		}
		for k, c := range s.convs {
			if !driver.Live(c.ExpiresAt, now) {
				delete(s.convs, k)
			}
		}
		for k, v := range s.subs {
			if !driver.Live(v.ExpiresAt, now) {
				delete(s.subs, k)
			}
		}
		for _, m := range s.docs {
			for k, v := range m {
				if !driver.Live(v.ExpiresAt, now) {
					delete(m, k)
				}
			}
		}
		for k, v := range s.values {
			if !driver.Live(v.expires, now) {
				delete(s.values, k)
			}
		}
		for k, v := range s.lists {
			if !driver.Live(v.expires, now) {
				delete(s.lists, k)
			}
		}
		for k, l := range s.locks {
			driver.PruneLock(l, now)
			// An idle record whose holders all lapsed still carries the zero
			// expiry of a busy one; it goes too (driver.NextFence's clock
			// floor keeps later tokens growing).
			if driver.LockIdle(l) && (l.ExpiresAt.IsZero() || !driver.Live(l.ExpiresAt, now)) {
				delete(s.locks, k)
			}
		}
		s.mu.Unlock()
	}
	d.sweepIncidents(now)
}
