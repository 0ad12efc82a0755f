// Package server is botstate's HTTP API: every operation of every domain as
// JSON over HTTP, for bots in any language, with tenants, limits and the
// operations a service needs. `botstate serve` runs it.
//
// Operations are POSTs of JSON to /v1/ns/{ns}/{operation} (see
// internal/wire and /v1/openapi.json). Errors are RFC 9457 problem
// documents with a stable code. A bearer token maps to one namespace; an
// admin token to all. /healthz, /readyz and /metrics serve operations.
package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/internal/wire"
)

// Admin is the namespace that marks an admin token: it may act on every
// namespace.
const Admin = "*"

// Config configures a Server.
type Config struct {
	// Store is the backend served (any namespace view of it); required.
	Store *botstate.Store
	// Tokens maps each bearer token to the namespace it may use, or to
	// Admin. With no tokens, every request is allowed: serve only on
	// loopback then (cmd/botstate refuses anything else).
	Tokens map[string]string
	// MaxBody bounds a request body (default 4 MiB: a value of the default
	// 1 MiB limit, base64-encoded, fits).
	MaxBody int64
	// MaxValueSize bounds payloads, results, data and bodies (default
	// botstate.DefaultMaxValueSize).
	MaxValueSize int
	// Rate is the requests per second allowed per token (0: no limit), with
	// bursts of Burst (default Rate).
	Rate  float64
	Burst int
	// Logger receives one line per request and the errors (default
	// slog.Default()). No line carries a token.
	Logger *slog.Logger
	// Registry receives the server's metrics (default: a registry of its
	// own, served at /metrics).
	Registry *prometheus.Registry
	// Clock is the server's time, for requests that carry no now (default
	// time.Now).
	Clock func() time.Time
}

// Server serves the API. Build it with New.
type Server struct {
	cfg      Config
	drv      driver.Driver
	log      *slog.Logger
	ops      map[string]handler
	mux      *http.ServeMux
	limits   sync.Map // token -> *bucket
	metrics  *metrics
	tokens   []tokenNS
	patterns []string
	activity *activity
}

type tokenNS struct {
	token []byte
	ns    string
}

// New returns a server over cfg.Store.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("server.New: no store: %w", botstate.ErrInvalidArgument)
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 4 << 20
	}
	if cfg.MaxValueSize <= 0 {
		cfg.MaxValueSize = botstate.DefaultMaxValueSize
	}
	if cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0) {
		return nil, fmt.Errorf("server.New: rate %v: %w", cfg.Rate, botstate.ErrInvalidArgument)
	}
	if cfg.Burst <= 0 {
		cfg.Burst = max(int(math.Ceil(cfg.Rate)), 1)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	s := &Server{cfg: cfg, drv: cfg.Store.Driver(), log: cfg.Logger, activity: newActivity(cfg.Clock)}
	for tok, ns := range cfg.Tokens {
		if tok == "" {
			return nil, fmt.Errorf("server.New: an empty token: %w", botstate.ErrInvalidArgument)
		}
		if ns != Admin {
			if err := botstate.ValidNamespace(ns); err != nil {
				return nil, fmt.Errorf("server.New: a token's namespace: %w", err)
			}
		}
		s.tokens = append(s.tokens, tokenNS{token: []byte(tok), ns: ns})
	}
	var err error
	if s.metrics, err = newMetrics(cfg.Registry); err != nil {
		return nil, err
	}
	s.ops = s.handlers()
	for _, op := range wire.Ops {
		if s.ops[op.Name] == nil {
			return nil, fmt.Errorf("server.New: no handler for %s", op.Name)
		}
	}
	s.mux = http.NewServeMux()
	for _, op := range wire.Ops {
		name, h := op.Name, s.ops[op.Name]
		s.route("POST /v1/ns/{ns}/"+name, s.wrap(name, true, h))
	}
	s.route("POST /v1/snapshot/export", s.wrap("snapshot/export-all", false, s.ops["snapshot/export"]))
	s.route("POST /v1/snapshot/import", s.wrap("snapshot/import-all", false, s.ops["snapshot/import"]))
	s.route("GET /v1/openapi.json", http.HandlerFunc(s.openAPI))
	s.route("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") }))
	s.route("GET /readyz", http.HandlerFunc(s.ready))
	s.route("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	s.dashboardRoutes()
	s.mux.HandleFunc("/", s.noRoute)
	return s, nil
}

// noRoute answers what no route matched: 405 for a known operation asked
// with another method, 404 otherwise.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/ns/"); ok {
		if _, opName, ok := strings.Cut(rest, "/"); ok {
			if _, known := s.ops[opName]; known {
				w.Header().Set("Allow", http.MethodPost)
				s.problem(w, r, http.StatusMethodNotAllowed, wire.CodeMethod, "operations are POSTs")
				return
			}
		}
	}
	s.problem(w, r, http.StatusNotFound, wire.CodeNoRoute, "no route "+r.Method+" "+r.URL.Path)
}

// route registers a pattern and remembers it (Patterns).
func (s *Server) route(pattern string, h http.Handler) {
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, h)
}

// Patterns lists the method and path of every route the server serves.
func (s *Server) Patterns() []string { return append([]string(nil), s.patterns...) }

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s }

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Request-Id")
	if id == "" || len(id) > 128 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	w.Header().Set("X-Request-Id", id)
	s.mux.ServeHTTP(w, r)
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	// A read of a key nobody writes: the backend answers, or it is not ready.
	if _, _, err := s.drv.LookupEvent(ctx, "botstate-readyz", "readyz", s.cfg.Clock()); err != nil {
		s.problem(w, r, http.StatusServiceUnavailable, wire.CodeUnavailable, "the backend does not answer: "+err.Error())
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// handler serves one operation for namespace ns ("" for the whole store).
type handler func(ctx context.Context, c *call) (any, error)

// call is one request being served.
type call struct {
	s  *Server
	w  http.ResponseWriter
	r  *http.Request
	ns string
}

// decode reads the request's JSON body into v, strictly: one value, no
// unknown field.
func (c *call) decode(v any) error {
	dec := json.NewDecoder(c.r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return malformed("empty body: want a JSON object")
		}
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return malformed("more than one JSON value in the body")
	}
	return nil
}

// errMalformed marks a body that is not the JSON the operation takes.
type errMalformed struct{ msg string }

func (e errMalformed) Error() string { return e.msg }

func malformed(format string, args ...any) error { return errMalformed{fmt.Sprintf(format, args...)} }

// errBodyTooLarge marks a body over MaxBody.
type errBodyTooLarge struct{ limit int64 }

func (e errBodyTooLarge) Error() string { return fmt.Sprintf("body over %d bytes", e.limit) }

func bodyError(err error) error {
	var big *http.MaxBytesError
	if errors.As(err, &big) {
		return errBodyTooLarge{big.Limit}
	}
	return malformed("malformed JSON: %v", err)
}

// at returns the request's now, or the server's time when it has none.
func (c *call) at(t time.Time) time.Time {
	if t.IsZero() {
		return c.s.cfg.Clock().UTC()
	}
	return t
}

// principal is what a request's token allows: one namespace, or all.
func (s *Server) principal(r *http.Request) (ns string, token string, ok bool) {
	tok, _ := bearer(r)
	ns, ok = s.principalOf(tok)
	return ns, tok, ok
}

// bearer is the request's bearer token, if it has one.
func bearer(r *http.Request) (string, bool) {
	return strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// principalOf is what a token allows: one namespace, or all (Admin). With
// no tokens configured, everything is allowed.
func (s *Server) principalOf(tok string) (ns string, ok bool) {
	if len(s.tokens) == 0 {
		return Admin, true
	}
	if tok == "" {
		return "", false
	}
	// Compare with every token, in constant time each, and keep going after
	// a match: the time taken says nothing about which token matched.
	match := -1
	for i, t := range s.tokens {
		if subtle.ConstantTimeCompare(t.token, []byte(tok)) == 1 {
			match = i
		}
	}
	if match < 0 {
		return "", false
	}
	return s.tokens[match].ns, true
}

// wrap serves one operation: authentication, the namespace, the rate limit,
// the body limit, the handler, the answer, the metrics and the log line.
// namespaced routes take the namespace from the path; the others act on the
// whole store and need an admin token.
func (s *Server) wrap(name string, namespaced bool, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			d := time.Since(start)
			s.metrics.observe(name, rec.status, rec.code, d)
			s.log.Info("request", "id", w.Header().Get("X-Request-Id"), "op", name, "ns", r.PathValue("ns"),
				"status", rec.status, "code", rec.code, "ms", float64(d.Microseconds())/1000)
		}()
		allowed, token, ok := s.principal(r)
		if !ok {
			rec.Header().Set("WWW-Authenticate", `Bearer realm="botstate"`)
			s.problem(rec, r, http.StatusUnauthorized, wire.CodeUnauthorized, "a valid bearer token is required")
			return
		}
		ns := ""
		if namespaced {
			ns = r.PathValue("ns")
			if err := botstate.ValidNamespace(ns); err != nil {
				s.problem(rec, r, http.StatusBadRequest, wire.CodeInvalid, err.Error())
				return
			}
			if allowed != Admin && allowed != ns {
				s.problem(rec, r, http.StatusForbidden, wire.CodeForbidden, "this token may not use namespace "+strconv.Quote(ns))
				return
			}
		} else if allowed != Admin {
			s.problem(rec, r, http.StatusForbidden, wire.CodeForbidden, "this operation spans every namespace: it needs an admin token")
			return
		}
		if wait, ok := s.allow(token); !ok {
			rec.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			s.problem(rec, r, http.StatusTooManyRequests, wire.CodeRateLimited, "over the token's rate limit")
			return
		}
		r.Body = http.MaxBytesReader(rec, r.Body, s.cfg.MaxBody)
		c := &call{s: s, w: rec, r: r, ns: ns}
		resp, err := h(r.Context(), c)
		if err != nil {
			s.fail(rec, r, err)
			return
		}
		if resp == nil { // streamed already
			return
		}
		rec.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(rec)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(resp)
	})
}

// statusWriter remembers the status and problem code of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
	code   string
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// fail answers err as a problem document.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code := classify(err)
	if status >= 500 {
		s.log.Error("request failed", "id", w.Header().Get("X-Request-Id"), "path", r.URL.Path, "err", err)
		s.metrics.backendErrors.Inc()
	}
	s.problem(w, r, status, code, err.Error())
}

// classify maps an error to its status and problem code.
func classify(err error) (int, string) {
	var mal errMalformed
	var big errBodyTooLarge
	switch {
	case errors.As(err, &mal):
		return http.StatusBadRequest, wire.CodeMalformed
	case errors.As(err, &big):
		return http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge
	case errors.Is(err, botstate.ErrInvalidTransition):
		return http.StatusBadRequest, wire.CodeInvalidTransition
	case errors.Is(err, botstate.ErrInvalidArgument):
		return http.StatusBadRequest, wire.CodeInvalid
	case errors.Is(err, botstate.ErrNotFound):
		return http.StatusNotFound, wire.CodeNotFound
	case errors.Is(err, botstate.ErrNotOwner):
		return http.StatusConflict, wire.CodeNotOwner
	case errors.Is(err, botstate.ErrConflict):
		return http.StatusConflict, wire.CodeConflict
	case errors.Is(err, botstate.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, wire.CodeTooLarge
	case errors.Is(err, botstate.ErrClosed):
		return http.StatusServiceUnavailable, wire.CodeClosed
	case errors.Is(err, botstate.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, wire.CodeUnavailable
	}
	return http.StatusInternalServerError, wire.CodeInternal
}

// problem writes an RFC 9457 problem document.
func (s *Server) problem(w http.ResponseWriter, r *http.Request, status int, code, detail string) {
	if sw, ok := w.(*statusWriter); ok {
		sw.code = code
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(wire.Problem{Type: wire.ProblemType(code), Title: http.StatusText(status), Status: status,
		Detail: detail, Instance: w.Header().Get("X-Request-Id"), Code: code})
}

// ---- rate limit ----

// bucket is a token bucket: rate per second, up to burst.
type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// allow takes one request from token's bucket, or says how long to wait.
func (s *Server) allow(token string) (time.Duration, bool) {
	if s.cfg.Rate == 0 {
		return 0, true
	}
	v, _ := s.limits.LoadOrStore(token, &bucket{tokens: float64(s.cfg.Burst), last: time.Now()})
	b := v.(*bucket)
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = math.Min(float64(s.cfg.Burst), b.tokens+now.Sub(b.last).Seconds()*s.cfg.Rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / s.cfg.Rate * float64(time.Second)), false
}

// ---- metrics ----

type metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	backendErrors prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "botstate_requests_total",
			Help: "Requests served, by operation, status and problem code."}, []string{"op", "status", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "botstate_request_seconds",
			Help: "Time to serve a request, by operation.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"op"}),
		backendErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "botstate_backend_errors_total",
			Help: "Requests that failed in the backend (5xx)."}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.backendErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("server: metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observe(op string, status int, code string, d time.Duration) {
	m.requests.WithLabelValues(op, strconv.Itoa(status), code).Inc()
	m.latency.WithLabelValues(op).Observe(d.Seconds())
}
