package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/botstate/botstate/driver"
)

func init() { driver.Register("dynamodb", Open) }

// Attribute and index names of the table. Only pk and sk are key attributes
// of the table; post_id, is_open and open_sk are keys of the two global
// secondary indexes.
const (
	attrPK     = "pk"
	attrSK     = "sk"
	attrTTL    = "ttl"
	attrPostID = "post_id"
	attrIsOpen = "is_open"
	attrOpenSK = "open_sk"

	// IndexPostID finds an issue of a channel by its Slack post id:
	// partition key pk, sort key post_id, every attribute projected.
	IndexPostID = "GSIPostID"
	// IndexIsOpen lists open work of a namespace in order: open issues
	// (is_open "<ns>#ISSUE#", sorted by channel, correlation id and unique
	// id) and unfinished events (is_open "<ns>#EVP#" or "<ns>#EVC#", sorted
	// by creation time). Partition key is_open, sort key open_sk, every
	// attribute projected.
	IndexIsOpen = "GSIIsOpen"
)

// maxItemSize is DynamoDB's limit on one item, names and values included.
const maxItemSize = 400 * 1024

// Driver is the DynamoDB backend. It is safe for concurrent use.
type Driver struct {
	db     *dynamodb.Client
	table  string
	idle   interface{ CloseIdleConnections() } // nil when the client cannot
	closed atomic.Bool
}

var (
	_ driver.Driver          = (*Driver)(nil)
	_ driver.SchemaValidator = (*Driver)(nil)
)

// Options is what a dynamodb:// URL says, parsed.
type Options struct {
	// Table is the table's name: the URL's host.
	Table string
	// Region is the AWS region; empty lets the default chain (AWS_REGION,
	// the shared config) choose.
	Region string
	// Endpoint, when set, replaces the service endpoint: DynamoDB Local,
	// a VPC endpoint, a proxy.
	Endpoint string
	// Create makes Open create the table, its indexes and its TTL setting
	// when they are missing.
	Create bool
}

// ParseURL reads dynamodb://TABLE?region=R&endpoint=URL&create=1.
func ParseURL(u *url.URL) (Options, error) {
	var o Options
	if u.Scheme != "dynamodb" {
		return o, urlErr(u, "scheme must be dynamodb")
	}
	if u.User != nil {
		return o, urlErr(u, "credentials do not belong in the URL (use the AWS default chain)")
	}
	if u.Path != "" && u.Path != "/" {
		return o, urlErr(u, "the table is the host (dynamodb://TABLE), the URL takes no path")
	}
	if u.Port() != "" {
		return o, urlErr(u, "the host is the table name and takes no port (use ?endpoint=http://host:port)")
	}
	o.Table = u.Hostname()
	if !validTable(o.Table) {
		return o, urlErr(u, "table name must be 3 to 255 characters of letters, digits, '_', '-' and '.'")
	}
	for k, vs := range u.Query() {
		if len(vs) != 1 {
			return o, urlErr(u, "option "+k+" given more than once")
		}
		v := vs[0]
		switch k {
		case "region":
			o.Region = v
		case "endpoint":
			eu, err := url.Parse(v)
			if err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" {
				return o, urlErr(u, "endpoint must be an http:// or https:// URL")
			}
			o.Endpoint = v
		case "create":
			switch v {
			case "1", "true":
				o.Create = true
			case "0", "false", "":
			default:
				return o, urlErr(u, "create must be 1 or 0")
			}
		default:
			return o, urlErr(u, "unknown option "+k+" (known: region, endpoint, create)")
		}
	}
	return o, nil
}

func validTable(s string) bool {
	if len(s) < 3 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

type urlError struct {
	u   string
	msg string
}

func (e *urlError) Error() string { return "dynamodb: URL " + e.u + ": " + e.msg }
func (e *urlError) Unwrap() error { return driver.ErrInvalidArgument }

func urlErr(u *url.URL, msg string) error { return &urlError{u: u.Redacted(), msg: msg} }

// Open opens the table a dynamodb:// URL names; see ParseURL. With create=1
// it creates what is missing of the table before returning; otherwise it
// does not contact DynamoDB at all (Incidents.Init validates the schema).
func Open(ctx context.Context, u *url.URL, cfg driver.Config) (driver.Driver, error) {
	o, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	d, err := New(ctx, o, cfg)
	if err != nil {
		return nil, err
	}
	if o.Create {
		if err := d.EnsureSchema(ctx); err != nil {
			_ = d.Close()
			return nil, err
		}
	}
	return d, nil
}

// New builds a driver from parsed options without contacting DynamoDB.
func New(ctx context.Context, o Options, cfg driver.Config) (*Driver, error) {
	// More idle connections per host than net/http's default of two: a
	// busy store talks to one endpoint from many goroutines.
	httpc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConns = 256
		tr.MaxIdleConnsPerHost = 256
		// A server that accepts connections but never answers must
		// fail the attempt (ErrUnavailable) even under a context with
		// no deadline; DynamoDB answers every call in well under this.
		tr.ResponseHeaderTimeout = 30 * time.Second
	})
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpc),
		config.WithRetryer(func() aws.Retryer {
			// No client-side retry quota: conditional-write loops under
			// contention must not be refused by the SDK's token bucket.
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.RateLimiter = ratelimit.None
				so.MaxBackoff = 2 * time.Second
			})
		}),
	}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	if o.Endpoint != "" {
		// A local endpoint needs a region to sign with, any will do.
		opts = append(opts, config.WithDefaultRegion("us-east-1"))
		if loopback(o.Endpoint) && !credentialsConfigured() {
			// DynamoDB Local accepts any credentials; without this the
			// default chain would end at the EC2 metadata service. Any
			// other endpoint (a VPC endpoint, a proxy) is real DynamoDB,
			// whose credentials come from the default chain, an instance
			// role included.
			opts = append(opts, config.WithCredentialsProvider(
				credentials.NewStaticCredentialsProvider("botstate", "botstate", "")))
		}
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("dynamodb: loading AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, &urlError{u: "dynamodb://" + o.Table, msg: "no AWS region: add ?region=... or set AWS_REGION"}
	}
	// Use the transport the configuration built (it may have added a CA
	// bundle) in a plain client, so that Close can drop its idle
	// connections: the client BuildableClient.Freeze returns wraps its
	// transport in one without CloseIdleConnections, which made Close
	// leave every pooled connection (and its two goroutines) open until
	// the server timed it out. DynamoDB never redirects; a redirect is
	// answered as it comes, as the SDK's client does for most codes.
	if b, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient); ok {
		awsCfg.HTTPClient = &http.Client{Transport: b.GetTransport(),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	idle, _ := awsCfg.HTTPClient.(interface{ CloseIdleConnections() })
	client := dynamodb.NewFromConfig(awsCfg, func(do *dynamodb.Options) {
		if o.Endpoint != "" {
			do.BaseEndpoint = aws.String(o.Endpoint)
			// DynamoDB Local sends X-Amz-Crc32: 0 with some answers;
			// the SDK would log a warning for each after parsing them
			// anyway (the check never fails a call).
			do.DisableValidateResponseChecksum = true
		}
	})
	// cfg.Clock is not needed: there is no reaper, DynamoDB's TTL
	// collects expired items, and every call carries its own now.
	_ = cfg
	return &Driver{db: client, table: o.Table, idle: idle}, nil
}

// loopback reports whether endpoint names this machine (localhost or a
// loopback address): DynamoDB Local, not AWS.
func loopback(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// FromClient builds a driver on a DynamoDB client the application already
// holds (dynamodb.NewFromConfig with its aws.Config: region, credentials,
// endpoint), over table. With create it creates the table and its index
// and TTL setting when missing, as ?create=1 does; without, the table
// must exist (EnsureSchema or Init check it). Close leaves the client's
// connections alone. Pass the driver to botstate.OpenDriver.
func FromClient(ctx context.Context, client *dynamodb.Client, table string, create bool) (*Driver, error) {
	if client == nil {
		return nil, fmt.Errorf("dynamodb: nil client: %w", driver.ErrInvalidArgument)
	}
	if !validTable(table) {
		return nil, fmt.Errorf("dynamodb: table %q: a name is 3 to 255 characters of letters, digits, '_', '-' and '.': %w", table, driver.ErrInvalidArgument)
	}
	d := &Driver{db: client, table: table}
	if create {
		if err := d.EnsureSchema(ctx); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// credentialsConfigured reports whether the environment or the shared files
// name credentials, without asking any credential service.
func credentialsConfigured() bool {
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		if os.Getenv(v) != "" {
			return true
		}
	}
	files := []string{os.Getenv("AWS_SHARED_CREDENTIALS_FILE"), os.Getenv("AWS_CONFIG_FILE")}
	if home, err := os.UserHomeDir(); err == nil {
		files = append(files, filepath.Join(home, ".aws", "credentials"), filepath.Join(home, ".aws", "config"))
	}
	for _, f := range files {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	return false
}

// Table returns the table's name.
func (d *Driver) Table() string { return d.table }

// Client returns the DynamoDB client underneath, for tools and tests.
func (d *Driver) Client() *dynamodb.Client { return d.db }

// Close marks the driver closed and drops idle connections. Calls in flight
// finish; later calls return ErrClosed.
func (d *Driver) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	if d.idle != nil {
		d.idle.CloseIdleConnections()
	}
	return nil
}

func (d *Driver) check() error {
	if d.closed.Load() {
		return driver.ErrClosed
	}
	return nil
}

// ---- errors -----------------------------------------------------------------

// opError is an error of one driver operation: a sentinel (ErrUnavailable,
// ErrTooLarge...) when one applies, the context's error when it ended the
// call, and the SDK's error.
type opError struct {
	op   string
	msg  string
	errs []error
}

func (e *opError) Error() string {
	var b strings.Builder
	b.WriteString("dynamodb: ")
	b.WriteString(e.op)
	if e.msg != "" {
		b.WriteString(": ")
		b.WriteString(e.msg)
	}
	for _, err := range e.errs {
		b.WriteString(": ")
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *opError) Unwrap() []error { return e.errs }

// throttled are the error codes that mean "try later", not "you are wrong".
var throttled = map[string]bool{
	"ProvisionedThroughputExceededException": true,
	"ThrottlingException":                    true,
	"RequestLimitExceeded":                   true,
	"InternalServerError":                    true,
	"ServiceUnavailable":                     true,
	"LimitExceededException":                 true,
	"TransactionInProgressException":         true,
}

// fail turns an SDK error into the driver's: anything that is not an answer
// from DynamoDB (connection refused or reset, timeouts, a cancelled context)
// and throttling wrap ErrUnavailable; an item over DynamoDB's size limit
// wraps ErrTooLarge.
func fail(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var oe *opError
	if errors.As(err, &oe) || errors.Is(err, driver.ErrNotOwner) || errors.Is(err, driver.ErrConflict) ||
		errors.Is(err, driver.ErrNotFound) || errors.Is(err, driver.ErrTooLarge) || errors.Is(err, driver.ErrClosed) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return &opError{op: op, errs: []error{driver.ErrUnavailable, cerr, err}}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &opError{op: op, errs: []error{driver.ErrUnavailable, err}}
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code, msg := ae.ErrorCode(), ae.ErrorMessage()
		switch {
		case code == "ValidationException" && tooLargeMessage(msg), cancelledTooLarge(err):
			return &opError{op: op, msg: "item over DynamoDB's 400 KB limit", errs: []error{driver.ErrTooLarge, err}}
		case code == "ResourceNotFoundException":
			return &opError{op: op, msg: "table or index missing (open with create=1, or create it)", errs: []error{err}}
		case throttled[code] || ae.ErrorFault() == smithy.FaultServer:
			return &opError{op: op, errs: []error{driver.ErrUnavailable, err}}
		}
		return &opError{op: op, errs: []error{err}}
	}
	// Not an answer from the service (connection refused or reset, a
	// timeout, DNS): the request never completed.
	return &opError{op: op, errs: []error{driver.ErrUnavailable, err}}
}

// cancelledTooLarge reports a transaction cancelled because an item in it
// was over the size limit.
func cancelledTooLarge(err error) bool {
	var tc *types.TransactionCanceledException
	if !errors.As(err, &tc) {
		return false
	}
	for _, r := range tc.CancellationReasons {
		if aws.ToString(r.Code) == "ValidationError" && tooLargeMessage(aws.ToString(r.Message)) {
			return true
		}
	}
	return false
}

func tooLargeMessage(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "size") && (strings.Contains(m, "exceed") || strings.Contains(m, "maximum"))
}

func tooLarge(op string, size int) error {
	return &opError{op: op, msg: fmt.Sprintf("item would be %d bytes, over DynamoDB's %d-byte item limit", size, maxItemSize),
		errs: []error{driver.ErrTooLarge}}
}

// ---- backoff ------------------------------------------------------------------

// maxAttempts bounds every optimistic read-decide-write loop. Each lost round
// means another writer won, so the loop makes progress globally; the bound
// only stops a pathological pile-up from spinning forever.
const maxAttempts = 200

// backoff waits before retry attempt n (0-based), capped exponential with
// jitter (driver.Backoff), and returns early with the context's error.
func backoff(ctx context.Context, n int) error {
	return driver.Sleep(ctx, driver.Backoff(n, 2*time.Millisecond, 100*time.Millisecond))
}

func contention(op string) error {
	return &opError{op: op, msg: fmt.Sprintf("gave up after %d conflicting concurrent writes", maxAttempts),
		errs: []error{driver.ErrUnavailable}}
}
