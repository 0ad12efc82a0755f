// Package botstate is the state layer for chat bots: exactly-once event
// processing, conversation (FSM) state, thread subscriptions and memory,
// per-thread locks with queue and debounce, and an alert/issue store, behind
// one API over several backends.
//
// Open a store by URL; the scheme picks the backend, which registers itself
// when its package is imported:
//
//	import _ "github.com/botstate/botstate/backend/mem"
//
//	st, err := botstate.Open(ctx, "mem://")
//	defer st.Close()
//	acme := st.Namespace("acme")
//	res, err := acme.Events().Claim(ctx, key, payload, time.Minute)
//
// Every method takes a context, honours its deadline, and returns errors that
// errors.Is matches against the sentinels of this package.
//
// # Types shared with package driver
//
// The plain data that passes unchanged between a caller and a backend —
// Event and EventStatus, Entry, LockState, Strategy and AcquireStatus,
// Subscription, the snapshot Record — are aliases of package driver's
// types, on purpose: a backend fills the very value the caller receives,
// with no copy and no field-by-field conversion on any call, and the two
// can never drift apart. Their fields are documented in package driver;
// driver is part of this module and versioned with it. Types that carry
// behaviour or rules of their own (Claim, Lock, AcquireResult, Conversation,
// Flow, the Alert and Issue interfaces) are this package's.
package botstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/botstate/botstate/driver"
)

// DefaultNamespace is the namespace of a Store returned by Open.
const DefaultNamespace = "default"

// Clock tells the time. Tests inject a fake one with WithClock.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Store is a handle on a backend, scoped to one namespace. It is safe for
// concurrent use. Namespace returns views that share the backend; closing any
// of them closes the backend for all.
type Store struct {
	core  *core
	ns    string
	nsErr error     // set when ns is not a valid name
	at    time.Time // when set, the view's clock stands still here (At)
}

type core struct {
	drv    driver.Driver
	cfg    config
	closed atomic.Bool
	once   sync.Once
	cerr   error
	// token generation: a random prefix per store and a counter, so claim
	// tokens are unique across processes without a random read per call.
	tokenPrefix string
	tokenSeq    atomic.Uint64
	lazyTokens  bool          // the driver implements driver.LazyTokens
	mintToken   func() string // newToken, bound once so claims do not allocate it
}

// Open opens the backend named by rawURL's scheme. The backend's package must
// be imported (for its registration) by the program.
func Open(ctx context.Context, rawURL string, opts ...Option) (*Store, error) {
	const op = "Open"
	if ctx == nil {
		return nil, invalid(op, "nil context")
	}
	cfg, err := buildConfig(op, opts)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, invalid(op, "malformed URL: %v", err)
	}
	if u.Scheme == "" {
		return nil, invalid(op, "URL %q has no scheme (want one of %s)", rawURL, strings.Join(driver.Schemes(), ", "))
	}
	opener, ok := driver.Lookup(u.Scheme)
	if !ok {
		return nil, invalid(op, "no backend for scheme %q (registered: %s; import the backend package)", u.Scheme, strings.Join(driver.Schemes(), ", "))
	}
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	clock := cfg.clock
	drv, err := opener(ctx, u, driver.Config{Clock: clock.Now, SweepInterval: cfg.sweepInterval})
	if err != nil {
		return nil, wrap(op, err)
	}
	return newStore(drv, cfg), nil
}

// OpenDriver returns a Store over a driver that a backend built from a
// client the application already holds — postgres.FromPool, redis.FromClient,
// dynamodb.FromClient, file.FromDB — as sql.OpenDB does from a connector.
// Closing the store closes the driver, which leaves the application's
// client open. The options are Open's; the clock and sweep interval of the
// backend's own reaper are the driver.Config its constructor was given.
func OpenDriver(drv driver.Driver, opts ...Option) (*Store, error) {
	const op = "OpenDriver"
	if drv == nil {
		return nil, invalid(op, "nil driver")
	}
	cfg, err := buildConfig(op, opts)
	if err != nil {
		return nil, err
	}
	return newStore(drv, cfg), nil
}

// buildConfig applies opts to the defaults and checks the result.
func buildConfig(op string, opts []Option) (config, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			return cfg, invalid(op, "nil option")
		}
		o(&cfg)
	}
	return cfg, cfg.validate()
}

func newStore(drv driver.Driver, cfg config) *Store {
	var prefix [8]byte
	_, _ = rand.Read(prefix[:])
	c := &core{drv: drv, cfg: cfg, tokenPrefix: hex.EncodeToString(prefix[:])}
	_, c.lazyTokens = drv.(driver.LazyTokens)
	c.mintToken = c.newToken
	return &Store{core: c, ns: DefaultNamespace}
}

// Namespace returns a view of the same backend whose keys can never collide
// with any other namespace's. A name is 1 to 64 characters of letters,
// digits, '.', '_' and '-'. Namespace never panics: a view with a bad name
// refuses every call with ErrInvalidArgument (ValidNamespace checks a name
// up front).
func (s *Store) Namespace(name string) *Store {
	return &Store{core: s.core, ns: name, nsErr: ValidNamespace(name), at: s.at}
}

// At returns a view of the store (same backend, same namespace) whose clock
// stands still at t: every expiry and lease it decides, it decides at t. A
// zero t gives back the store's own clock. The HTTP server serves a request
// that carries its own time with it.
func (s *Store) At(t time.Time) *Store {
	v := *s
	v.at = t
	return &v
}

// Name returns the store's namespace.
func (s *Store) Name() string { return s.ns }

// MaxAttempts returns how many times an event may be claimed before it is
// parked as failed (WithMaxAttempts); zero means no limit.
func (s *Store) MaxAttempts() int { return s.core.cfg.maxAttempts }

// ValidNamespace reports whether name can be a namespace, with
// ErrInvalidArgument when it cannot.
func ValidNamespace(name string) error {
	if name == "" || len(name) > 64 {
		return invalid("Namespace", "namespace must be 1 to 64 characters, got %d", len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return invalid("Namespace", "namespace %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

// Close closes the backend. Calls on any view of the store afterwards return
// ErrClosed. Closing twice returns the first result.
func (s *Store) Close() error {
	s.core.once.Do(func() {
		s.core.closed.Store(true)
		s.core.cerr = s.core.drv.Close()
	})
	return s.core.cerr
}

// Driver returns the backend underneath, for tools that need it (migration,
// inspection). Code using only the portable API never needs it.
func (s *Store) Driver() driver.Driver { return s.core.drv }

// now is the store's clock, truncated to microseconds so that every backend
// (PostgreSQL keeps microseconds) stores the same instants.
func (s *Store) now() time.Time {
	if !s.at.IsZero() {
		return s.at.UTC().Truncate(time.Microsecond)
	}
	return s.core.cfg.clock.Now().UTC().Truncate(time.Microsecond)
}

// judged is the time a takeover of another owner's claim or lock is judged
// at: now less the clock skew margin (WithClockSkewMargin).
func (s *Store) judged(now time.Time) time.Time {
	return now.Add(-s.core.cfg.skewMargin)
}

// after returns now+d truncated to microseconds, or the zero time (never)
// when d is zero.
func after(now time.Time, d time.Duration) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return now.Add(d).Truncate(time.Microsecond)
}

// newToken returns a claim token unique across stores and processes.
func (c *core) newToken() string {
	n := c.tokenSeq.Add(1)
	b := make([]byte, 0, 33)
	b = append(b, c.tokenPrefix...)
	b = append(b, '-')
	b = hexUint(b, n)
	return string(b)
}

func hexUint(b []byte, n uint64) []byte {
	const digits = "0123456789abcdef"
	var tmp [16]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = digits[n&15]
		n >>= 4
		if n == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}
