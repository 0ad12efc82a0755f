package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/botstate/botstate/driver"
)

func init() {
	for _, s := range []string{"redis", "rediss", "redis+cluster", "rediss+cluster"} {
		driver.Register(s, Open)
	}
}

// DefaultPrefix starts every key the backend writes, unless the URL's
// prefix option says otherwise.
const DefaultPrefix = "botstate:"

// DefaultFlushDelay is how long a connection's writer waits after a flush,
// while other calls are in flight, to gather more commands into its next
// write (rueidis's MaxFlushDelay). Under load it cuts the client's and the
// server's system calls several times over, which is most of their CPU
// for small scripts; a lone caller never waits (rueidis only delays when
// more than one call is pending).
const DefaultFlushDelay = 20 * time.Microsecond

// Driver is the Redis backend. It is safe for concurrent use.
type Driver struct {
	client  rueidis.Client
	prefix  string
	cluster bool
	borrow  bool // the client is the application's: Close leaves it open
	scan    bool // index-free events (events=scan): see scanevents.go
	closed  atomic.Bool
	inserts atomic.Uint64
}

var _ driver.Driver = (*Driver)(nil)

// Options is what a URL configures, parsed by ParseURL.
type Options struct {
	// Client is the rueidis configuration: addresses, credentials, TLS, db.
	Client rueidis.ClientOption
	// Prefix starts every key; it may not hold '{' or '}', which would
	// break the hash tags that keep an operation's keys in one slot.
	Prefix string
	// Cluster is set for the redis+cluster schemes.
	Cluster bool
	// ScanEvents keeps events without an index (events=scan): a new event
	// is one SET, and the recovery listings SCAN the namespace's keys.
	ScanEvents bool
}

// ParseURL reads a backend URL:
//
//	redis://[user:password@]host[:port][/db][?options]
//	rediss://...                      (TLS)
//	redis+cluster://[user:password@]host1[:port],host2[:port][?options]
//	rediss+cluster://...              (Cluster over TLS)
//
// Options: prefix (key prefix, default "botstate:"), dial_timeout and
// write_timeout (Go durations), flush_delay (a Go duration, default
// DefaultFlushDelay, 0 to turn it off), client_name, events (index, the
// default, or scan: see Options.ScanEvents) and skip_verify (TLS only, for
// test certificates). Anything else is refused, so a typo never goes
// unnoticed.
func ParseURL(u *url.URL) (Options, error) {
	var o Options
	bad := func(format string, args ...any) (Options, error) {
		return Options{}, &urlError{u: u.Redacted(), msg: fmt.Sprintf(format, args...)}
	}
	tlsOn, skipVerify, flushSet := false, false, false
	switch u.Scheme {
	case "redis":
	case "rediss":
		tlsOn = true
	case "redis+cluster":
		o.Cluster = true
	case "rediss+cluster":
		o.Cluster, tlsOn = true, true
	default:
		return bad("unknown scheme %q", u.Scheme)
	}
	if u.Opaque != "" || u.Fragment != "" {
		return bad("malformed URL")
	}
	if u.Host == "" {
		return bad("no host")
	}
	hosts := strings.Split(u.Host, ",")
	if len(hosts) > 1 && !o.Cluster {
		return bad("several hosts need the redis+cluster scheme")
	}
	var first string
	for _, h := range hosts {
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			host, port = h, "6379"
			if strings.Contains(strings.Trim(h, "[]"), ":") && !strings.HasPrefix(h, "[") {
				return bad("host %q: write IPv6 addresses in brackets", h)
			}
			host = strings.Trim(host, "[]")
		}
		if host == "" {
			return bad("empty host in %q", u.Host)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return bad("bad port in %q", h)
		}
		if first == "" {
			first = host
		}
		o.Client.InitAddress = append(o.Client.InitAddress, net.JoinHostPort(host, port))
	}
	if u.User != nil {
		o.Client.Username = u.User.Username()
		o.Client.Password, _ = u.User.Password()
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		db, err := strconv.Atoi(p)
		if err != nil || db < 0 || strings.Contains(p, "/") {
			return bad("path %q is not a database number", u.Path)
		}
		if o.Cluster && db != 0 {
			return bad("Redis Cluster has only database 0")
		}
		o.Client.SelectDB = db
	}
	o.Prefix = DefaultPrefix
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("malformed options: %v", err)
	}
	for name, vals := range q {
		if len(vals) != 1 {
			return bad("option %s given %d times", name, len(vals))
		}
		v := vals[0]
		switch name {
		case "prefix":
			if strings.ContainsAny(v, "{}") {
				return bad("prefix %q may not hold '{' or '}' (they would break the hash tags)", v)
			}
			o.Prefix = v
		case "dial_timeout", "write_timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return bad("%s %q is not a positive duration", name, v)
			}
			if name == "dial_timeout" {
				o.Client.Dialer.Timeout = d
			} else {
				o.Client.ConnWriteTimeout = d
			}
		case "flush_delay":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || d > time.Millisecond {
				return bad("flush_delay %q is not a duration between 0 and 1ms", v)
			}
			o.Client.MaxFlushDelay = d
			flushSet = true
		case "client_name":
			o.Client.ClientName = v
		case "events":
			switch v {
			case "index":
			case "scan":
				o.ScanEvents = true
			default:
				return bad("events %q is neither index nor scan", v)
			}
		case "skip_verify":
			b, err := strconv.ParseBool(v)
			if err != nil || !tlsOn {
				return bad("skip_verify needs a rediss scheme and a boolean")
			}
			skipVerify = b
		default:
			return bad("unknown option %q (known: prefix, dial_timeout, write_timeout, flush_delay, client_name, events, skip_verify)", name)
		}
	}
	if tlsOn {
		// InsecureSkipVerify only when the URL asks, for test certificates.
		o.Client.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: first, InsecureSkipVerify: skipVerify} //nolint:gosec
	}
	// Standalone URLs talk to exactly the server named; Cluster URLs
	// discover the slots from any of the seeds.
	o.Client.ForceSingleClient = !o.Cluster
	if !flushSet {
		o.Client.MaxFlushDelay = DefaultFlushDelay
	}
	// Client-side caching is not used: every read must see the server's
	// state as of its call, judged by the call's now.
	o.Client.DisableCache = true
	return o, nil
}

type urlError struct{ u, msg string }

func (e *urlError) Error() string { return "redis: URL " + e.u + ": " + e.msg }
func (e *urlError) Unwrap() error { return driver.ErrInvalidArgument }

// Open connects to the server or cluster the URL names. An unreachable
// server fails with an error matching driver.ErrUnavailable.
func Open(ctx context.Context, u *url.URL, _ driver.Config) (driver.Driver, error) {
	o, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	return New(ctx, o)
}

// New connects with parsed options.
func New(ctx context.Context, o Options) (*Driver, error) {
	if strings.ContainsAny(o.Prefix, "{}") {
		return nil, fmt.Errorf("redis: prefix %q holds a brace: %w", o.Prefix, driver.ErrInvalidArgument)
	}
	c, err := rueidis.NewClient(o.Client)
	if err != nil {
		return nil, fmt.Errorf("redis: connect to %s: %w: %w", strings.Join(o.Client.InitAddress, ","), driver.ErrUnavailable, err)
	}
	d := &Driver{client: c, prefix: o.Prefix, cluster: o.Cluster, scan: o.ScanEvents}
	if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis: ping: %w", d.fail(ctx, err))
	}
	return d, nil
}

// FromClient builds a driver on a rueidis client the application already
// holds (standalone or Cluster, as the client was built), with every key
// under prefix (DefaultPrefix when empty). Close leaves the client open.
// Pass the driver to botstate.OpenDriver.
func FromClient(ctx context.Context, c rueidis.Client, prefix string) (*Driver, error) {
	if c == nil {
		return nil, fmt.Errorf("redis: nil client: %w", driver.ErrInvalidArgument)
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("redis: prefix %q holds a brace: %w", prefix, driver.ErrInvalidArgument)
	}
	d := &Driver{client: c, prefix: prefix, cluster: c.Mode() == rueidis.ClientModeCluster, borrow: true}
	if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
		return nil, fmt.Errorf("redis: ping: %w", d.fail(ctx, err))
	}
	return d, nil
}

// Client returns the rueidis client underneath, for tools and tests.
func (d *Driver) Client() rueidis.Client { return d.client }

// Close closes the connections (but not a client given to FromClient);
// later calls return driver.ErrClosed.
func (d *Driver) Close() error {
	if d.closed.Swap(true) || d.borrow {
		return nil
	}
	d.client.Close()
	return nil
}

func (d *Driver) check() error {
	if d.closed.Load() {
		return driver.ErrClosed
	}
	return nil
}

// fail turns a client error into the driver's vocabulary: a closed driver
// says ErrClosed; a server that cannot be reached, is loading, failing over
// or out of memory says ErrUnavailable (with the context's error when the
// context ended the call); a Cluster redirection that surfaces (a standalone
// URL pointing at a Cluster node) is ErrInvalidArgument; a key of another
// type where botstate keeps its own (something else wrote it) is
// ErrConflict; any other refusal (authentication, permissions, a script
// error) is ErrUnavailable, with the server's message.
func (d *Driver) fail(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if d.closed.Load() {
		return driver.ErrClosed
	}
	if rerr, ok := rueidis.IsRedisErr(err); ok {
		msg := rerr.Error()
		code, _, _ := strings.Cut(msg, " ")
		switch code {
		case "LOADING", "BUSY", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY", "OOM", "NOREPLICAS":
			return fmt.Errorf("redis: %s: %w", msg, driver.ErrUnavailable)
		case "MOVED", "ASK":
			// The Cluster client follows redirections itself; one that
			// surfaces means a standalone URL points at a Cluster node.
			return fmt.Errorf("redis: %s (a Cluster node answered: use a redis+cluster:// URL): %w", msg, driver.ErrInvalidArgument)
		case "WRONGTYPE":
			return fmt.Errorf("redis: %s (a key of botstate's holds something else): %w", msg, driver.ErrConflict)
		}
		return fmt.Errorf("redis: %s: %w", msg, driver.ErrUnavailable)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("redis: %w: %w", driver.ErrUnavailable, err)
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("redis: %w: %w (%v)", driver.ErrUnavailable, cerr, err)
	}
	return fmt.Errorf("redis: %w: %w", driver.ErrUnavailable, err)
}

// ---- keys ----------------------------------------------------------------------
//
// Every key is prefix + "{" + tag + "}" + rest. The tag is the only part
// Redis Cluster hashes, so keys that one operation touches share it. It
// always starts with the namespace and the domain, which the namespace
// alphabet ([A-Za-z0-9._-]) keeps free of ':' and braces; the user's key, if
// any, only ever follows the tag, after a one-letter role, so no user key can
// reach into another namespace, domain, role or index.

// Domain letters.
const (
	domEvents   = "e"
	domConv     = "c"
	domThread   = "t"
	domChannel  = "n"
	domCache    = "v"
	domSubs     = "s"
	domLocks    = "l"
	domIncident = "i"
)

// nsBase is the key start of a domain kept whole in one slot per namespace.
func (d *Driver) nsBase(ns, dom string) string {
	return d.prefix + "{" + ns + ":" + dom + "}"
}

// keyBase is the key start of a domain spread across slots by key: the tag
// carries a hash of the key, so the keys of one item share a slot while
// different items land all over the cluster.
func (d *Driver) keyBase(ns, dom, key string) string {
	return d.prefix + "{" + keyTag(ns, dom, key) + "}"
}

// keyTag is the hash tag of keyBase: the namespace, the domain and the
// 32-bit FNV-1a hash of the key in 8 hex digits.
func keyTag(ns, dom, key string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	var b [8]byte
	const digits = "0123456789abcdef"
	v := h.Sum32()
	for i := 7; i >= 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
	return ns + ":" + dom + ":" + string(b[:])
}

// clusterSlots is the number of Redis Cluster hash slots.
const clusterSlots = 16384

// crcTable drives crc16, the CRC16-XMODEM that Redis Cluster hashes tags
// with (polynomial 0x1021, initial value 0).
var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// slotOf is the Cluster slot of a key whose hash tag is tag.
func slotOf(tag string) int {
	var c uint16
	for i := 0; i < len(tag); i++ {
		c = c<<8 ^ crcTable[byte(c>>8)^tag[i]]
	}
	return int(c) & (clusterSlots - 1)
}

var (
	slotTagsOnce sync.Once
	slotTags     [clusterSlots]string
)

// slotTag returns a hash tag that lands in slot: the first of "l0", "l1",
// ... that does. Such a tag holds no ':', so it never equals the tag of any
// other key (those start with a namespace and ':'). The table is built
// once, in about 170,000 CRC steps.
func slotTag(slot int) string {
	slotTagsOnce.Do(func() {
		for n, left := 0, clusterSlots; left > 0; n++ {
			t := "l" + strconv.Itoa(n)
			if s := slotOf(t); slotTags[s] == "" {
				slotTags[s] = t
				left--
			}
		}
	})
	return slotTags[slot]
}

// parsedKey is a key found by SCAN, taken apart.
type parsedKey struct {
	ns, dom, rest string
}

func (d *Driver) parseKey(k string) (parsedKey, bool) {
	if !strings.HasPrefix(k, d.prefix+"{") {
		return parsedKey{}, false
	}
	k = k[len(d.prefix)+1:]
	end := strings.IndexByte(k, '}')
	if end < 0 {
		return parsedKey{}, false
	}
	tag, rest := k[:end], k[end+1:]
	parts := strings.Split(tag, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return parsedKey{}, false
	}
	return parsedKey{ns: parts[0], dom: parts[1], rest: rest}, true
}

// ---- small conversions ------------------------------------------------------

// us encodes an instant as microseconds since the epoch, the zero time as 0.
func us(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixMicro(), 10)
}

func fromUS(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("redis: stored time %q: %w", s, err)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return time.UnixMicro(n).UTC(), nil
}

// pack joins fields as length-prefixed strings ("3:abc0:"), the one record
// encoding the Lua scripts and Go share: binary-safe, with no JSON in
// between, so payloads come back byte for byte.
func pack(fields ...string) string {
	n := 0
	for _, f := range fields {
		n += len(f) + 8
	}
	// A Builder hands its buffer over as the string: one allocation.
	var b strings.Builder
	b.Grow(n)
	var num [20]byte
	for _, f := range fields {
		b.Write(strconv.AppendInt(num[:0], int64(len(f)), 10))
		b.WriteByte(':')
		b.WriteString(f)
	}
	return b.String()
}

var errCorrupt = errors.New("redis: stored record is malformed")

// unpack splits a packed record into exactly n fields.
func unpack(s string, n int) ([]string, error) {
	out, err := unpackAll(s, n)
	if err != nil || len(out) != n {
		return nil, errCorrupt
	}
	return out, nil
}

// unpackAll splits a packed record into all its fields; n, the number
// expected, sizes the result.
func unpackAll(s string, n int) ([]string, error) {
	out := make([]string, 0, n)
	for len(s) > 0 {
		c := strings.IndexByte(s, ':')
		if c <= 0 {
			return nil, errCorrupt
		}
		l, err := strconv.Atoi(s[:c])
		if err != nil || l < 0 || c+1+l > len(s) {
			return nil, errCorrupt
		}
		out = append(out, s[c+1:c+1+l])
		s = s[c+1+l:]
	}
	return out, nil
}

// bytesOrNil returns nil for an empty string: drivers keep nil and empty
// payloads alike, as every other backend does.
func bytesOrNil(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// strs reads an array reply whose elements are strings or integers.
func strs(res rueidis.RedisResult) ([]string, error) {
	arr, err := res.ToArray()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(arr))
	for i := range arr {
		m := &arr[i]
		if m.IsInt64() {
			n, _ := m.AsInt64()
			out[i] = strconv.FormatInt(n, 10)
			continue
		}
		if m.IsNil() {
			continue
		}
		s, err := m.ToString()
		if err != nil {
			return nil, fmt.Errorf("redis: unexpected reply element: %w", err)
		}
		out[i] = s
	}
	return out, nil
}

// run executes a script and reads its array reply.
func (d *Driver) run(ctx context.Context, s *rueidis.Lua, keys, args []string) ([]string, error) {
	return d.runOn(ctx, d.client, s, keys, args)
}

// runOn is run through client c: one node's, for a script without keys.
func (d *Driver) runOn(ctx context.Context, c rueidis.Client, s *rueidis.Lua, keys, args []string) ([]string, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	out, err := strs(s.Exec(ctx, c, keys, args))
	if err != nil {
		return nil, d.fail(ctx, err)
	}
	return out, nil
}

// do sends one command and returns its result, mapping transport errors.
func (d *Driver) do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	return d.client.Do(ctx, cmd)
}

func isNil(err error) bool { return rueidis.IsRedisNil(err) }
