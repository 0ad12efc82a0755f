package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/botstate/botstate/driver"
)

func init() {
	driver.Register("postgres", Open)
	driver.Register("postgresql", Open)
}

// DefaultSchema is the schema the tables live in when the URL names none.
const DefaultSchema = "botstate"

// defaultReapInterval is how often expired rows are deleted when the store
// does not say; reads never depend on it.
const defaultReapInterval = time.Minute

// reapBatch is how many rows one reaper statement deletes, so that no
// reaper transaction holds many row locks or runs long.
const reapBatch = 1000

// maxAttempts bounds how often a call runs when PostgreSQL reports a
// serialization failure or a deadlock, or a request never left the client.
const maxAttempts = 5

// Driver is the PostgreSQL backend. Its methods are safe for concurrent use.
type Driver struct {
	pool   *pgxpool.Pool
	schema string
	clock  func() time.Time
	ins    *inserter // new event keys, in groups
	borrow bool      // the pool is the application's: Close leaves it open

	closed    atomic.Bool
	closeOnce sync.Once
	stopReap  context.CancelFunc
	reapDone  chan struct{}
}

var (
	_ driver.Driver          = (*Driver)(nil)
	_ driver.SchemaValidator = (*Driver)(nil)
)

// config is a parsed URL: the pool's configuration and botstate's own
// options, which never reach the server.
type config struct {
	pool    *pgxpool.Config
	schema  string
	migrate bool
}

var schemaName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// parseURL splits botstate's options (schema, migrate) from the URL and
// hands the rest to pgxpool.ParseConfig, which understands libpq's options
// and pgxpool's pool_* options.
func parseURL(u *url.URL) (config, error) {
	c := config{schema: DefaultSchema, migrate: true}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return c, invalidURL(u, "malformed query: "+err.Error())
	}
	if s := q.Get("schema"); q.Has("schema") {
		if !schemaName.MatchString(s) {
			return c, invalidURL(u, fmt.Sprintf("schema %q is not a plain identifier (letters, digits, '_'; at most 63)", s))
		}
		c.schema = s
	}
	if s := q.Get("migrate"); q.Has("migrate") {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return c, invalidURL(u, fmt.Sprintf("migrate=%q is not a boolean", s))
		}
		c.migrate = b
	}
	q.Del("schema")
	q.Del("migrate")
	rest := *u
	rest.RawQuery = q.Encode()
	pc, err := pgxpool.ParseConfig(rest.String())
	if err != nil {
		return c, invalidURL(u, err.Error())
	}
	// Every statement names its tables unqualified; the schema comes from
	// the connection's search_path, so one SQL text serves every schema and
	// is prepared once per connection.
	pc.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{c.schema}.Sanitize()
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "botstate"
	}
	c.pool = pc
	return c, nil
}

type urlError struct {
	u   string
	msg string
}

func (e *urlError) Error() string { return "postgres: URL " + e.u + ": " + e.msg }
func (e *urlError) Unwrap() error { return driver.ErrInvalidArgument }

func invalidURL(u *url.URL, msg string) error {
	return &urlError{u: u.Redacted(), msg: msg}
}

// Open connects to the database named by u (postgres:// or postgresql://),
// applies the embedded migrations unless the URL says migrate=false (then it
// only checks that the schema is current), and starts the reaper.
func Open(ctx context.Context, u *url.URL, cfg driver.Config) (driver.Driver, error) {
	c, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	if c.migrate {
		if err := migrate(ctx, c.pool.ConnConfig, c.schema); err != nil {
			return nil, err
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, c.pool)
	if err != nil {
		return nil, mapError(ctx, err)
	}
	d, err := start(ctx, pool, c.schema, !c.migrate, cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return d, nil
}

// PoolConfig sets what botstate needs in a pool's configuration before the
// application builds the pool it will give FromPool: its schema as the
// connections' search_path (every statement names its tables unqualified).
func PoolConfig(pc *pgxpool.Config, schema string) {
	if schema == "" {
		schema = DefaultSchema
	}
	pc.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
}

// FromPool builds a driver on a pool the application already holds, whose
// configuration went through PoolConfig with the same schema (FromPool
// checks the connections' search_path). With migrate it applies the
// embedded migrations first, as Open does; without, it only checks that
// the schema is current. Close stops the driver's reaper and leaves the
// pool open. Pass the driver to botstate.OpenDriver.
func FromPool(ctx context.Context, pool *pgxpool.Pool, schema string, migrateSchema bool, cfg driver.Config) (*Driver, error) {
	if pool == nil {
		return nil, fmt.Errorf("postgres: nil pool: %w", driver.ErrInvalidArgument)
	}
	if schema == "" {
		schema = DefaultSchema
	}
	var path string
	if err := pool.QueryRow(ctx, "SHOW search_path").Scan(&path); err != nil {
		return nil, mapError(ctx, err)
	}
	want := pgx.Identifier{schema}.Sanitize()
	if path != want && path != schema {
		return nil, fmt.Errorf("postgres: the pool's search_path is %s, not botstate's schema %s: build the pool from a configuration passed to postgres.PoolConfig: %w",
			path, want, driver.ErrInvalidArgument)
	}
	if migrateSchema {
		if err := migrate(ctx, pool.Config().ConnConfig, schema); err != nil {
			return nil, err
		}
	}
	d, err := start(ctx, pool, schema, !migrateSchema, cfg)
	if err != nil {
		return nil, err
	}
	d.borrow = true
	return d, nil
}

// start builds the driver on pool, checks the schema when asked, and
// starts the reaper.
func start(ctx context.Context, pool *pgxpool.Pool, schema string, validate bool, cfg driver.Config) (*Driver, error) {
	d := &Driver{pool: pool, schema: schema, clock: cfg.Clock, reapDone: make(chan struct{})}
	if d.clock == nil {
		d.clock = time.Now
	}
	d.ins = newInserter(d)
	if validate {
		if err := d.ValidateSchema(ctx); err != nil {
			return nil, err
		}
	}
	every := cfg.SweepInterval
	if every <= 0 {
		every = defaultReapInterval
	}
	reapCtx, stop := context.WithCancel(context.Background())
	d.stopReap = stop
	go d.reaper(reapCtx, every)
	return d, nil
}

// Close stops the reaper and closes the pool, waiting for calls in flight;
// later calls return ErrClosed.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		d.stopReap()
		<-d.reapDone
		d.ins.close()
		if !d.borrow {
			d.pool.Close()
		}
	})
	return nil
}

// Pool returns the connection pool, for tools and tests that need to run
// their own SQL against the store's database.
func (d *Driver) Pool() *pgxpool.Pool { return d.pool }

// Schema returns the schema the store's tables live in.
func (d *Driver) Schema() string { return d.schema }

// run calls fn, which does one statement or one transaction, and maps its
// error. It runs fn again (a few times, with a short random backoff) when
// PostgreSQL reports a serialization failure or a deadlock — the
// transaction was rolled back, so nothing happened — or when the request
// never left the client.
func (d *Driver) run(ctx context.Context, fn func() error) error {
	if d.closed.Load() {
		return driver.ErrClosed
	}
	var err error
	for attempt := 1; ; attempt++ {
		err = fn()
		if err == nil || attempt == maxAttempts || !retryable(err) || ctx.Err() != nil {
			break
		}
		_ = driver.Sleep(ctx, time.Duration(attempt)*time.Duration(1+rand.IntN(5))*time.Millisecond)
	}
	if err != nil && d.closed.Load() && isClosedPool(err) {
		return driver.ErrClosed
	}
	return mapError(ctx, err)
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	return pgconn.SafeToRetry(err) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

func isClosedPool(err error) bool {
	return err != nil && err.Error() == "closed pool"
}

// unavailableError is a failure to reach the server: it matches
// driver.ErrUnavailable, the cause, and the context's error when the
// context ended.
type unavailableError struct {
	cause  error
	ctxErr error
}

func (e *unavailableError) Error() string {
	return "postgres: server unavailable: " + e.cause.Error()
}

func (e *unavailableError) Unwrap() []error {
	errs := []error{driver.ErrUnavailable, e.cause}
	if e.ctxErr != nil {
		errs = append(errs, e.ctxErr)
	}
	return errs
}

// sentinelError is a server error that maps to one of botstate's sentinels.
type sentinelError struct {
	sentinel error
	cause    error
}

func (e *sentinelError) Error() string   { return "postgres: " + e.cause.Error() }
func (e *sentinelError) Unwrap() []error { return []error{e.sentinel, e.cause} }

// mapError turns what pgx returned into botstate's errors: connection
// failures, server shutdowns and context deadlines become ErrUnavailable;
// data exceptions ErrInvalidArgument; program limits ErrTooLarge. botstate's
// own sentinels pass through.
func mapError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	for _, s := range []error{driver.ErrNotOwner, driver.ErrConflict, driver.ErrNotFound, driver.ErrClosed,
		driver.ErrInvalidArgument, driver.ErrTooLarge, driver.ErrUnavailable} {
		if errors.Is(err, s) {
			return err
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && len(pe.Code) == 5 {
		switch {
		case pe.Code[:2] == "08", // connection exception
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutdown, crash, starting up
			pe.Code == "53300",                     // too many connections
			pe.Code == "40001", pe.Code == "40P01", // still failing after retries
			pe.Code == "57014": // canceled: our context ended
			return &unavailableError{cause: err, ctxErr: ctx.Err()}
		case pe.Code[:2] == "22":
			return &sentinelError{sentinel: driver.ErrInvalidArgument, cause: err}
		case pe.Code[:2] == "54":
			return &sentinelError{sentinel: driver.ErrTooLarge, cause: err}
		}
		return fmt.Errorf("postgres: %w", err)
	}
	if ctx.Err() != nil || connectionFailure(err) {
		return &unavailableError{cause: err, ctxErr: ctx.Err()}
	}
	return fmt.Errorf("postgres: %w", err)
}

// connectionFailure reports errors of the transport, as opposed to errors
// of the program (a value that does not scan, say).
func connectionFailure(err error) bool {
	var (
		ce  *pgconn.ConnectError
		ne  net.Error
		ope *net.OpError
	)
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), errors.As(err, &ope),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, pgconn.ErrConnClosed), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		pgconn.Timeout(err), pgconn.SafeToRetry(err), isClosedPool(err):
		return true
	}
	return false
}

// queryRows runs a query as one call of d.run and collects a value per row
// with scan; no row is a nil slice.
func queryRows[T any](ctx context.Context, d *Driver, scan pgx.RowToFunc[T], sql string, args ...any) ([]T, error) {
	var out []T
	err := d.run(ctx, func() error {
		rows, err := d.pool.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		out, err = pgx.AppendRows([]T(nil), rows, scan)
		return err
	})
	return out, err
}

// ---- values --------------------------------------------------------------

// ts is a time as a statement argument: NULL for the zero time ("never").
func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// utc returns a scanned time in UTC, keeping the zero time (NULL) zero.
func utc(t *time.Time) time.Time {
	if t == nil || t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// deref returns a scanned nullable text, "" for NULL.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// txn runs one transaction in two round trips on one connection. The first
// batch is BEGIN plus what first queues (typically taking row locks with
// SELECT ... FOR UPDATE and reading the rows); then decide, in Go, with the
// rows still locked, returns the second batch, to which COMMIT is appended.
// A nil second batch just commits. On any error the transaction is rolled
// back; a connection that cannot roll back is closed, never reused.
func (d *Driver) txn(ctx context.Context, first func(b *pgx.Batch), decide func() (*pgx.Batch, error)) error {
	c, err := d.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// Release destroys a connection still inside a transaction.
	defer c.Release()
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	first(b)
	err = c.SendBatch(ctx, b).Close()
	var second *pgx.Batch
	if err == nil {
		second, err = decide()
	}
	if err == nil {
		if second == nil {
			second = &pgx.Batch{}
		}
		second.Queue("COMMIT")
		err = c.SendBatch(ctx, second).Close()
	}
	if err != nil && !c.Conn().IsClosed() && c.Conn().PgConn().TxStatus() != 'I' {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		c.Exec(rctx, "ROLLBACK") //nolint:errcheck // a failed rollback leaves the connection to be destroyed on release
		cancel()
	}
	return err
}
