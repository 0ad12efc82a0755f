package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/botstate/botstate/driver"
)

func init() { driver.Register("file", Open) }

// DefaultPath is the file the command line is to use when given no URL:
// botstate serve with no URL opens file:botstate.db, in the working
// directory.
const DefaultPath = "botstate.db"

// DefaultLockTimeout is how long Open waits for another process to let go of
// the file before it gives up with ErrUnavailable.
const DefaultLockTimeout = time.Second

// defaultSweep is how often expired items are reaped when the store does not
// say; reads never depend on it.
const defaultSweep = 10 * time.Second

// reapBatch bounds the items one reaping transaction removes, so the reaper
// never holds the writer for long.
const reapBatch = 1000

// maxGroup bounds the calls one group commit applies in one transaction.
const maxGroup = 1000

// formatVersion is the layout this build writes, kept in the meta bucket.
// It reads format 1 too: Open upgrades such a file in place (see upgrade).
// A file of any other version is refused rather than misread, and so is a
// format-2 file by a format-1 build, which would take failed events for
// claimable ones and drop the entries of holders and skipped entries.
const formatVersion = 2

// Bucket names. Each domain has its own top-level bucket whose keys start
// with the namespace and a NUL; see doc.go for the layout.
var (
	bMeta        = []byte("meta")
	bEvents      = []byte("events")
	bEventOrder  = []byte("event_order")
	bEventCount  = []byte("event_count")
	bPending     = []byte("event_pending")
	bFailed      = []byte("event_failed")
	bConvs       = []byte("conversations")
	bSubs        = []byte("subscriptions")
	bThreadDocs  = []byte("thread_state")
	bChannelDocs = []byte("channel_state")
	bCache       = []byte("cache_values")
	bLists       = []byte("cache_lists")
	bLocks       = []byte("locks")
	bLockLapse   = []byte("lock_lapse")
	bAlerts      = []byte("alerts")
	bIssues      = []byte("issues")
	bIssueOpen   = []byte("issue_open")
	bIssuePost   = []byte("issue_post")
	bMappings    = []byte("move_mappings")
	bStates      = []byte("processing_states")
	bExpiry      = []byte("expiry")

	allBuckets = [][]byte{bMeta, bEvents, bEventOrder, bEventCount, bPending, bFailed, bConvs, bSubs,
		bThreadDocs, bChannelDocs, bCache, bLists, bLocks, bLockLapse, bAlerts, bIssues, bIssueOpen,
		bIssuePost, bMappings, bStates, bExpiry}
)

// commitMode says how write transactions are committed. Only the default is
// offered to users; the others exist so the benchmark can compare against
// them in the same run.
type commitMode uint8

const (
	// commitGroup: a committer goroutine applies every call waiting when
	// the previous commit ends in one transaction (one fsync for all).
	commitGroup commitMode = iota
	// commitBatch: bbolt's DB.Batch, which waits up to MaxBatchDelay to
	// gather calls.
	commitBatch
	// commitSolo: one DB.Update, so one fsync, per call.
	commitSolo
)

// Driver is the bbolt backend. Every method is one bbolt transaction.
type Driver struct {
	db     *bolt.DB
	path   string
	clock  func() time.Time
	mode   commitMode
	borrow bool // the db is the application's: Close leaves it open

	// mu orders sends on reqs against Close closing it.
	mu     sync.RWMutex
	closed atomic.Bool
	reqs   chan *commitReq
	stop   chan struct{}
	wg     sync.WaitGroup
}

var _ driver.Driver = (*Driver)(nil)

// options is what a file URL can say.
type options struct {
	path    string
	timeout time.Duration
	noSync  bool
	mode    commitMode // not in URLs: for the benchmark's comparison
}

// Open opens (creating when absent) the file a file URL names:
//
//	file:///var/lib/bot/state.db   absolute path
//	file:state.db                  relative to the working directory
//	file://./data/state.db         relative too (host "." or "..")
//	file://localhost/var/state.db  absolute (RFC 8089)
//
// Query options: timeout=<duration> (how long to wait for another process to
// release the file, default 1s) and nosync=1 (skip fsync: fast, and NOT
// durable; for tests only). A context deadline sooner than the timeout
// shortens the wait.
func Open(ctx context.Context, u *url.URL, cfg driver.Config) (driver.Driver, error) {
	o, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	byDeadline := false
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < o.timeout {
		o.timeout, byDeadline = max(time.Until(dl), time.Millisecond), true
	}
	d, err := open(o, cfg)
	var locked *LockedError
	if errors.As(err, &locked) && byDeadline {
		// The wait ended with the context's deadline (a hair before it).
		return nil, fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
	}
	return d, err
}

type urlError struct {
	u   string
	msg string
}

func (e *urlError) Error() string { return "file: URL " + e.u + ": " + e.msg }
func (e *urlError) Unwrap() error { return driver.ErrInvalidArgument }

// PathOf returns the path of the file a file URL names, or an error when
// rawURL is not a valid file URL.
func PathOf(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	if u.Scheme != "file" {
		return "", &urlError{u.Redacted(), "not a file URL"}
	}
	o, err := parseURL(u)
	return o.path, err
}

func parseURL(u *url.URL) (options, error) {
	bad := func(format string, args ...any) (options, error) {
		return options{}, &urlError{u.Redacted(), fmt.Sprintf(format, args...)}
	}
	o := options{timeout: DefaultLockTimeout}
	switch {
	case u.Opaque != "":
		p, err := url.PathUnescape(u.Opaque)
		if err != nil {
			return bad("bad escape in path: %v", err)
		}
		o.path = p
	case u.Host == "" || u.Host == "localhost":
		o.path = u.Path
	case u.Host == "." || u.Host == "..":
		o.path = u.Host + u.Path
	default:
		return bad("host %q: a file URL names a local file (file:///abs/path.db or file:rel/path.db)", u.Host)
	}
	if u.User != nil {
		return bad("a file URL takes no user")
	}
	if o.path == "" || strings.HasSuffix(o.path, "/") {
		return bad("no file name (want file:///abs/path/%s or file:%s)", DefaultPath, DefaultPath)
	}
	o.path = filepath.FromSlash(o.path)
	for k, vs := range u.Query() {
		v := vs[len(vs)-1]
		switch k {
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return bad("timeout=%q: want a positive duration such as 1s", v)
			}
			o.timeout = d
		case "nosync":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("nosync=%q: want 1 or 0", v)
			}
			o.noSync = b
		default:
			return bad("unknown option %q (known: timeout, nosync)", k)
		}
	}
	return o, nil
}

// LockedError reports a file that another process (or another Store in this
// one) holds open. It matches driver.ErrUnavailable.
type LockedError struct {
	Path string
	Wait time.Duration
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("file: %s is in use by another process or another open Store (its lock was not "+
		"released within %v); only one can have a botstate file open at a time", e.Path, e.Wait)
}

// Unwrap makes a LockedError match driver.ErrUnavailable.
func (e *LockedError) Unwrap() error { return driver.ErrUnavailable }

func open(o options, cfg driver.Config) (*Driver, error) {
	db, err := bolt.Open(o.path, 0o600, &bolt.Options{Timeout: o.timeout, NoSync: o.noSync, FreelistType: bolt.FreelistArrayType})
	if errors.Is(err, berrors.ErrTimeout) {
		abs, _ := filepath.Abs(o.path)
		return nil, &LockedError{Path: abs, Wait: o.timeout.Round(time.Millisecond)}
	}
	if err != nil {
		return nil, openError(o.path, err)
	}
	d, err := fromDB(db, o.mode, cfg)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("file: open %s: %w", o.path, err)
	}
	return d, nil
}

// FromDB builds a driver on a bbolt database the application already has
// open for writing: botstate keeps its buckets (events, locks, ...) beside
// the application's own. Close stops the driver's committer and reaper and
// leaves the database open. Pass the driver to botstate.OpenDriver.
func FromDB(db *bolt.DB, cfg driver.Config) (*Driver, error) {
	if db == nil {
		return nil, fmt.Errorf("file: nil database: %w", driver.ErrInvalidArgument)
	}
	if db.IsReadOnly() {
		return nil, fmt.Errorf("file: the database %s is open read-only: %w", db.Path(), driver.ErrInvalidArgument)
	}
	d, err := fromDB(db, commitGroup, cfg)
	if err != nil {
		return nil, fmt.Errorf("file: %s: %w", db.Path(), err)
	}
	d.borrow = true
	return d, nil
}

// fromDB creates the buckets (or upgrades an older file) and starts the
// committer and the reaper.
func fromDB(db *bolt.DB, mode commitMode, cfg driver.Config) (*Driver, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		if v := meta.Get([]byte("format")); v != nil {
			n, err := strconv.Atoi(string(v))
			switch {
			case err == nil && n == formatVersion:
				return nil
			case err == nil && n == 1:
				if err := upgrade(tx); err != nil {
					return fmt.Errorf("upgrade from format 1: %w", err)
				}
			default:
				return fmt.Errorf("file format version %q, this build reads 1 and %d", v, formatVersion)
			}
		}
		return meta.Put([]byte("format"), []byte(strconv.Itoa(formatVersion)))
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", driver.ErrUnavailable, err)
	}
	d := &Driver{db: db, path: db.Path(), clock: cfg.Clock, mode: mode, reqs: make(chan *commitReq, 4*maxGroup), stop: make(chan struct{})}
	if d.clock == nil {
		d.clock = time.Now
	}
	every := cfg.SweepInterval
	if every <= 0 {
		every = defaultSweep
	}
	d.wg.Add(2)
	go d.committer()
	go func() {
		defer d.wg.Done()
		driver.Every(d.stop, every, func() { _, _ = d.reap(d.clock()) })
	}()
	return d, nil
}

// openError says why a file could not be opened, matching a sentinel: a
// path whose directory is missing, or that is a directory, is
// ErrInvalidArgument (the URL is wrong); anything else (permissions, a
// full disk, a file that is not bbolt's) ErrUnavailable.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("file: open %s: the directory %s does not exist: %w", path, filepath.Dir(path), driver.ErrInvalidArgument)
	case errors.Is(err, syscall.EISDIR):
		return fmt.Errorf("file: open %s: a directory, not a file: %w", path, driver.ErrInvalidArgument)
	}
	return fmt.Errorf("file: open %s: %w: %w", path, driver.ErrUnavailable, err)
}

// upgrade brings a format-1 file to format 2 inside Open's transaction.
// Format 2 adds fields in optional tails (absent reads as zero, see
// codec.go) and two indexes: event_failed starts empty, as format 1 had no
// failed events, and lock_lapse is built from the lock records, one pass
// over the locks bucket.
func upgrade(tx *bolt.Tx) error {
	c := tx.Bucket(bLocks).Cursor()
	for bk, v := c.First(); bk != nil; bk, v = c.Next() {
		ns, k, ok := splitNS(bk)
		if !ok {
			continue
		}
		st, err := decodeLock(k, v)
		if err != nil {
			return err
		}
		if err := setLapse(tx, ns, k, lapseMark{}, lapseOf(&st)); err != nil {
			return err
		}
	}
	return nil
}

// Path returns the file's path as the URL gave it.
func (d *Driver) Path() string { return d.path }

// Close stops the reaper, lets every write already submitted commit, and
// closes the file; later calls return ErrClosed.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed.Swap(true) {
		d.mu.Unlock()
		return nil
	}
	close(d.reqs)
	d.mu.Unlock()
	close(d.stop)
	d.wg.Wait()
	if d.borrow {
		return nil
	}
	return d.db.Close()
}

// begin is the check every method starts with.
func (d *Driver) begin(ctx context.Context) error {
	if d.closed.Load() {
		return driver.ErrClosed
	}
	return ctx.Err()
}

// boltErr turns an error from bbolt into the driver's vocabulary. Errors the
// methods return on purpose (sentinels) never pass through bbolt: they are
// kept beside the transaction, which commits or stays empty.
func (d *Driver) boltErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return driver.ErrClosed
	case errors.Is(err, driver.ErrUnavailable):
		return err
	case errors.Is(err, driver.ErrInvalidArgument), errors.Is(err, errCorrupt):
		// Our own refusals and undecodable data: retrying will not help.
		return fmt.Errorf("file %s: %w", d.path, err)
	}
	return fmt.Errorf("file %s: %w: %w", d.path, driver.ErrUnavailable, err)
}

// read runs fn in a read-only transaction.
func (d *Driver) read(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	return d.boltErr(d.db.View(fn))
}

// write runs fn in a write transaction that may be shared with other calls'
// functions (group commit). fn may run more than once (when another function
// in its group failed, the group is rolled back and retried), so it must set
// every result it reports afresh on each run and touch nothing outside the
// transaction. A function reports an outcome such as ErrNotOwner through its
// captured results, not by returning it, so that it never costs its group a
// rollback: the error fn returns is for failures of the transaction itself.
func (d *Driver) write(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	switch d.mode {
	case commitBatch:
		return d.boltErr(d.db.Batch(fn))
	case commitSolo:
		return d.boltErr(d.db.Update(fn))
	}
	r := &commitReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	d.mu.RLock()
	if d.closed.Load() {
		d.mu.RUnlock()
		return driver.ErrClosed
	}
	d.reqs <- r
	d.mu.RUnlock()
	return d.boltErr(<-r.done)
}

type commitReq struct {
	ctx  context.Context
	fn   func(tx *bolt.Tx) error
	done chan error
}

// committer is the group commit. It takes every call waiting when the
// previous commit ended and applies them all in one transaction, so N
// concurrent writers share one fsync. It adds no delay: a lone writer is
// committed at once, and batches grow only while a commit is in flight.
// (bbolt's DB.Batch instead waits up to 10 ms to gather a batch, which caps
// a lone writer near 100 commits a second; see BenchmarkClaimComplete.)
func (d *Driver) committer() {
	defer d.wg.Done()
	group := make([]*commitReq, 0, maxGroup)
	// take adds r to the group, unless its caller gave up while it waited:
	// that call has not happened and now never will.
	take := func(r *commitReq) {
		if err := r.ctx.Err(); err != nil {
			r.done <- fmt.Errorf("file %s: gave up waiting for the commit: %w: %w", d.path, driver.ErrUnavailable, err)
			return
		}
		group = append(group, r)
	}
	for r := range d.reqs {
		take(r)
		// Let writers that are runnable (typically those the previous
		// commit just released) submit before the group closes: without
		// this, groups alternate between a few calls and the rest. With
		// nothing else runnable it returns at once.
		runtime.Gosched()
	fill:
		for len(group) < maxGroup {
			select {
			case r, ok := <-d.reqs:
				if !ok {
					break fill
				}
				take(r)
			default:
				break fill
			}
		}
		if len(group) > 0 {
			d.commitGroup(group)
		}
		clear(group)
		group = group[:0]
	}
}

// commitGroup applies the calls in one transaction. When one of them fails,
// the transaction is rolled back, that call is retried alone (and gets its
// own error) and the rest are retried together, as DB.Batch does.
func (d *Driver) commitGroup(group []*commitReq) {
	for len(group) > 0 {
		failed := -1
		err := d.db.Update(func(tx *bolt.Tx) error {
			for i, r := range group {
				if err := safeCall(r.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, r := range group {
				r.done <- err
			}
			return
		}
		r := group[failed]
		group = append(group[:failed:failed], group[failed+1:]...)
		r.done <- d.db.Update(func(tx *bolt.Tx) error { return safeCall(r.fn, tx) })
	}
}

// safeCall turns a panic in fn into an error, so one bad call cannot take
// the committer (and every writer with it) down.
func safeCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("file: panic in transaction: %v", p)
		}
	}()
	return fn(tx)
}

// Check runs bbolt's consistency check on the file and returns the first
// problem found, or nil.
func (d *Driver) Check(ctx context.Context) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	return d.db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = fmt.Errorf("file %s: %w", d.path, err)
			}
		}
		return first
	})
}
