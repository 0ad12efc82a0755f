package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
	"github.com/botstate/botstate/internal/wire"
	"github.com/botstate/botstate/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logs collects what the server logs.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var tokens = map[string]string{"token-of-a": "a", "token-of-b": "b", "the-admin-token": server.Admin}

type fixture struct {
	t    testing.TB
	st   *botstate.Store
	srv  *server.Server
	http *httptest.Server
	logs *logs
}

func newFixture(t testing.TB, cfg server.Config) *fixture {
	t.Helper()
	st, err := botstate.Open(context.Background(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l := &logs{}
	cfg.Store, cfg.Logger = st, slog.New(slog.NewTextHandler(l, nil))
	if cfg.Tokens == nil {
		cfg.Tokens = tokens
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &fixture{t: t, st: st, srv: srv, http: hs, logs: l}
}

// do sends a request and returns the status, the problem code (if any) and
// the body.
func (f *fixture) do(method, path, token string, body []byte) (int, string, []byte) {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.http.URL+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.http.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var p wire.Problem
	if resp.StatusCode != 200 {
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			f.t.Fatalf("%s %s: %d with Content-Type %q, want a problem document: %s", method, path, resp.StatusCode, ct, b)
		}
		if err := json.Unmarshal(b, &p); err != nil || p.Code == "" || p.Status != resp.StatusCode || p.Type != wire.ProblemType(p.Code) {
			f.t.Fatalf("%s %s: %d: not a problem document: %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, p.Code, b
}

// snapshot exports namespace ns through the admin route.
func (f *fixture) snapshot(ns string) string {
	f.t.Helper()
	code, _, b := f.do("POST", "/v1/ns/"+ns+"/snapshot/export", "the-admin-token", nil)
	if code != 200 {
		f.t.Fatalf("export %s: %d %s", ns, code, b)
	}
	return string(b)
}

// samples holds a valid request for every operation, on the state
// populate writes; a new operation without one fails the tenancy test.
func samples(now time.Time) map[string]any {
	later := now.Add(time.Hour)
	return map[string]any{
		"events/record":                    wire.RecordReq{Key: "new-event", Payload: []byte("p")},
		"events/get":                       wire.KeyNowReq{Key: "claimed"},
		"events/forget":                    wire.KeyReq{Key: "claimed"},
		"events/claim":                     wire.ClaimReq{Key: "another", Token: "t2", LeaseUntil: later},
		"events/complete":                  wire.CompleteReq{Key: "claimed", Token: "t1", Result: []byte("r")},
		"events/extend":                    wire.ExtendEventReq{Key: "claimed", Token: "t1", LeaseUntil: later},
		"events/release":                   wire.ReleaseEventReq{Key: "claimed", Token: "t1"},
		"events/retry":                     wire.RetryEventReq{Key: "failed"},
		"events/expired":                   wire.ListReq{},
		"events/due":                       wire.ListReq{},
		"events/failed":                    wire.ListReq{},
		"events/pending":                   wire.ListReq{},
		"conversations/get":                wire.KeyNowReq{Key: "conv"},
		"conversations/set-state":          wire.SetStateReq{Key: "conv", State: "other"},
		"conversations/set-data":           wire.SetDataReq{Key: "conv", Data: json.RawMessage(`{"x":2}`)},
		"conversations/merge-data":         wire.MergeDataReq{Key: "conv", Data: json.RawMessage(`{"y":3}`)},
		"conversations/swap":               wire.SwapReq{Key: "conv", Version: 1, State: "swapped", Data: json.RawMessage(`{}`)},
		"conversations/delete":             wire.KeyReq{Key: "conv"},
		"threads/subscribe":                wire.SubscribeReq{Thread: "T2"},
		"threads/unsubscribe":              wire.ThreadReq{Thread: "T1"},
		"threads/is-subscribed":            wire.ThreadReq{Thread: "T1"},
		"threads/subscriptions":            wire.ListSubscriptionsReq{},
		"docs/get":                         wire.DocReq{Scope: "thread", ID: "T1"},
		"docs/put":                         wire.PutDocReq{Scope: "thread", ID: "T1", Data: json.RawMessage(`{"a":1}`)},
		"docs/merge":                       wire.MergeDocReq{Scope: "channel", ID: "C1", Data: json.RawMessage(`{"a":1}`)},
		"docs/delete":                      wire.DocReq{Scope: "thread", ID: "T1"},
		"cache/get":                        wire.KeyNowReq{Key: "cached"},
		"cache/set":                        wire.CacheSetReq{Key: "cached", Value: []byte("v2")},
		"cache/delete":                     wire.KeyReq{Key: "cached"},
		"lists/append":                     wire.AppendReq{Key: "list", Value: []byte("v"), MaxLen: 5},
		"lists/range":                      wire.KeyNowReq{Key: "list"},
		"locks/acquire":                    wire.AcquireReq{Key: "lock", Owner: "o2", Strategy: "queue", Entry: []byte("e"), ExpiresAt: later},
		"locks/extend":                     wire.LockReq{Key: "lock", Token: 1, ExpiresAt: later},
		"locks/release":                    wire.ReleaseLockReq{Key: "lock", Token: 1},
		"locks/force-release":              wire.ForceReleaseReq{Key: "lock"},
		"locks/handover":                   wire.HandoverReq{Key: "lock", Token: 1, ExpiresAt: later},
		"locks/inspect":                    wire.KeyNowReq{Key: "lock"},
		"locks/lapsed":                     wire.ListReq{},
		"incidents/save-alert":             wire.Alert{Channel: "C1", UniqueID: "a2", Timestamp: now, Body: `{}`},
		"incidents/save-issues":            wire.SaveIssuesReq{Issues: []wire.Issue{{Channel: "C1", UniqueID: "i2", CorrelationID: "c", Open: true, Body: `{}`}}},
		"incidents/move-issue":             wire.MoveIssueReq{Issue: wire.Issue{Channel: "C2", UniqueID: "i1", CorrelationID: "c", Open: true, Body: `{}`}, Source: "C1"},
		"incidents/find-open-issues":       wire.FindIssuesReq{Channel: "C1", CorrelationID: "c"},
		"incidents/find-issues-by-post-id": wire.FindIssuesReq{Channel: "C1", PostID: "p1"},
		"incidents/active-channels":        wire.NowReq{},
		"incidents/open-issues-in-channel": wire.FindIssuesReq{Channel: "C1"},
		"incidents/save-move-mapping":      wire.MoveMapping{Channel: "C1", CorrelationID: "c", UniqueID: "i1", Body: `{}`},
		"incidents/find-move-mapping":      wire.MoveMapping{Channel: "C1", CorrelationID: "c"},
		"incidents/delete-move-mapping":    wire.MoveMapping{Channel: "C1", CorrelationID: "c"},
		"incidents/save-processing-state":  wire.ProcessingStateReq{Channel: "C1", Body: `{}`},
		"incidents/find-processing-state":  wire.ProcessingStateReq{Channel: "C1"},
		"incidents/drop":                   wire.Empty{},
		"incidents/validate-schema":        wire.Empty{},
		"snapshot/export":                  wire.SnapshotReq{},
		"snapshot/import":                  nil, // a snapshot body, built by the test
	}
}

// populate writes something of every domain into ns through its owner's
// token.
func (f *fixture) populate(ns, token string) {
	f.t.Helper()
	now := time.Now().UTC()
	later := now.Add(time.Hour)
	for _, c := range []struct {
		op  string
		req any
	}{
		{"events/claim", wire.ClaimReq{Key: "claimed", Payload: []byte("p"), Token: "t1", LeaseUntil: later}},
		{"events/claim", wire.ClaimReq{Key: "failed", Token: "tf", LeaseUntil: later}},
		{"events/release", wire.ReleaseEventReq{Key: "failed", Token: "tf", Fail: true, Reason: "bad"}},
		{"conversations/set-state", wire.SetStateReq{Key: "conv", State: "asking"}},
		{"threads/subscribe", wire.SubscribeReq{Thread: "T1"}},
		{"docs/put", wire.PutDocReq{Scope: "thread", ID: "T1", Data: json.RawMessage(`{"topic":"x"}`)}},
		{"cache/set", wire.CacheSetReq{Key: "cached", Value: []byte("v")}},
		{"lists/append", wire.AppendReq{Key: "list", Value: []byte("v"), MaxLen: 5}},
		{"locks/acquire", wire.AcquireReq{Key: "lock", Owner: "o", Strategy: "queue", Entry: []byte("e"), ExpiresAt: later}},
		{"incidents/save-issues", wire.SaveIssuesReq{Issues: []wire.Issue{{Channel: "C1", UniqueID: "i1", CorrelationID: "c", PostID: "p1", Open: true, Body: `{"z":1}`}}}},
		{"incidents/save-move-mapping", wire.MoveMapping{Channel: "C1", CorrelationID: "c", UniqueID: "i1", Body: `{}`}},
	} {
		b, _ := json.Marshal(c.req)
		if code, _, out := f.do("POST", "/v1/ns/"+ns+"/"+c.op, token, b); code != 200 {
			f.t.Fatalf("populate %s: %d %s", c.op, code, out)
		}
	}
}

func TestEveryRouteKeepsTenantsApart(t *testing.T) {
	f := newFixture(t, server.Config{})
	f.populate("b", "token-of-b")
	before := f.snapshot("b")
	reqs := samples(time.Now().UTC())
	importBody := []byte(`{"format":"botstate-snapshot","version":1}` + "\n" +
		`{"kind":"cache_value","ns":"b","key":"imported","payload":"dg=="}` + "\n")
	tested := 0
	for _, pattern := range f.srv.Patterns() {
		method, path, _ := strings.Cut(pattern, " ")
		switch {
		case strings.HasPrefix(path, "/v1/ns/{ns}/"):
			name := strings.TrimPrefix(path, "/v1/ns/{ns}/")
			req, ok := reqs[name]
			if !ok {
				t.Errorf("no sample request for %s: add one, so the route's tenancy is tested", name)
				continue
			}
			body, _ := json.Marshal(req)
			if name == "snapshot/import" {
				body = importBody
			}
			for _, c := range []struct {
				token string
				code  int
			}{{"token-of-a", 403}, {"", 401}, {"not-a-token", 401}, {"token-of-b-", 401}} {
				if code, pc, out := f.do(method, "/v1/ns/b/"+name, c.token, body); code != c.code {
					t.Errorf("%s on namespace b with token %q: %d (%s) %s, want %d", name, c.token, code, pc, out, c.code)
				}
			}
			if after := f.snapshot("b"); after != before {
				t.Fatalf("%s by a stranger changed namespace b:\n%s\n---\n%s", name, before, after)
			}
			tested++
		case path == "/v1/snapshot/export" || path == "/v1/snapshot/import":
			for _, tok := range []string{"token-of-a", "token-of-b"} {
				if code, _, _ := f.do(method, path, tok, importBody); code != 403 {
					t.Errorf("%s with a namespace's token: %d, want 403", path, code)
				}
			}
			tested++
		case strings.HasPrefix(path, "/ui/ns/{ns}"):
			dashboardKeepsTenantsApart(f, path)
			tested++
		case method == "GET" || strings.HasPrefix(path, "/ui/"):
			// health, readiness, metrics, the document, the dashboard's
			// index, login, logout and static files: no namespace's state.
		default:
			t.Errorf("route %s is neither namespaced, admin-only nor public: classify it here", pattern)
		}
	}
	if want := len(wire.Ops) + 2 + 3; tested != want { // + the dashboard's namespace routes
		t.Fatalf("tested %d routes, want %d", tested, want)
	}
	// The owner's token works on every sample, so the 403s above were the
	// tenancy check, not a bad request.
	for _, op := range wire.Ops {
		body, _ := json.Marshal(reqs[op.Name])
		if op.Name == "snapshot/import" {
			body = importBody
		}
		if op.Name == "incidents/drop" || op.Name == "events/forget" {
			continue // would empty what later samples read
		}
		if code, _, out := f.do("POST", "/v1/ns/b/"+op.Name, "token-of-b", body); code != 200 && code != 404 && code != 409 {
			t.Errorf("%s with the owner's token: %d %s", op.Name, code, out)
		}
	}
	for _, tok := range []string{"token-of-a", "token-of-b", "the-admin-token"} {
		if strings.Contains(f.logs.String(), tok) {
			t.Fatalf("a log line holds a token:\n%s", f.logs.String())
		}
	}
}

func TestOpenAPIMatchesTheRoutes(t *testing.T) {
	f := newFixture(t, server.Config{})
	code, _, b := f.do("GET", "/v1/openapi.json", "", nil)
	if code != 200 {
		t.Fatalf("openapi.json: %d", code)
	}
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("not an OpenAPI 3.1 document (%v): %.200s", err, b)
	}
	var documented []string
	for path, methods := range doc.Paths {
		for m := range methods {
			documented = append(documented, strings.ToUpper(m)+" "+path)
		}
	}
	// The document covers the API; the dashboard's pages (/ and /ui/…) are
	// not part of it.
	var served []string
	for _, p := range f.srv.Patterns() {
		if p != "GET /{$}" && !strings.Contains(p, " /ui/") {
			served = append(served, p)
		}
	}
	sort.Strings(documented)
	sort.Strings(served)
	if fmt.Sprint(documented) != fmt.Sprint(served) {
		t.Fatalf("the document and the routes differ:\ndocumented %v\nserved     %v", documented, served)
	}
	// Every $ref resolves.
	for _, ref := range strings.Split(string(b), `"$ref": "#/components/schemas/`)[1:] {
		name := ref[:strings.IndexByte(ref, '"')]
		if _, ok := doc.Components.Schemas[name]; !ok {
			t.Fatalf("unresolved $ref %s", name)
		}
	}
}

func TestBadInputGetsAProblemAndChangesNothing(t *testing.T) {
	f := newFixture(t, server.Config{MaxBody: 1 << 16, MaxValueSize: 1 << 10})
	f.populate("a", "token-of-a")
	before := f.snapshot("a")
	big := bytes.Repeat([]byte("x"), 1<<17)
	for _, c := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"malformed JSON", "POST", "/v1/ns/a/events/claim", `{"key":`, 400, wire.CodeMalformed},
		{"a wrong type", "POST", "/v1/ns/a/events/forget", `{"key":5}`, 400, wire.CodeMalformed},
		{"an unknown field", "POST", "/v1/ns/a/events/forget", `{"key":"claimed","oops":1}`, 400, wire.CodeMalformed},
		{"two values", "POST", "/v1/ns/a/events/forget", `{"key":"claimed"}{"key":"x"}`, 400, wire.CodeMalformed},
		{"an empty body", "POST", "/v1/ns/a/events/forget", ``, 400, wire.CodeMalformed},
		{"a body over the limit", "POST", "/v1/ns/a/cache/set", `{"key":"k","value":"` + string(big) + `"}`, 413, wire.CodeBodyTooLarge},
		{"a value over the limit", "POST", "/v1/ns/a/cache/set", `{"key":"k","value":"` + strings.Repeat("A", 2000) + `"}`, 413, wire.CodeTooLarge},
		{"an empty key", "POST", "/v1/ns/a/events/forget", `{"key":""}`, 400, wire.CodeInvalid},
		{"a NUL in a key", "POST", "/v1/ns/a/cache/delete", `{"key":"a\u0000b"}`, 400, wire.CodeInvalid},
		{"a key over 1 KiB", "POST", "/v1/ns/a/cache/delete", `{"key":"` + strings.Repeat("k", 1025) + `"}`, 413, wire.CodeTooLarge},
		{"data that is not an object", "POST", "/v1/ns/a/conversations/set-data", `{"key":"conv","data":[1]}`, 400, wire.CodeInvalid},
		{"an unknown strategy", "POST", "/v1/ns/a/locks/acquire", `{"key":"l","owner":"o","strategy":"yolo","expires_at":"2030-01-01T00:00:00Z"}`, 400, wire.CodeInvalid},
		{"an absurd time", "POST", "/v1/ns/a/threads/subscribe", `{"thread":"T9","expires_at":"9999-01-01T00:00:00Z"}`, 400, wire.CodeInvalid},
		{"a negative limit", "POST", "/v1/ns/a/events/pending", `{"limit":-1}`, 400, wire.CodeInvalid},
		{"a body that is not JSON", "POST", "/v1/ns/a/incidents/save-alert", `{"channel":"C","unique_id":"u","timestamp":"2026-01-01T00:00:00Z","body":"{not json"}`, 400, wire.CodeInvalid},
		{"a namespace with a slash", "POST", "/v1/ns/a%2Fb/events/forget", `{"key":"k"}`, 400, wire.CodeInvalid},
		{"a namespace too long", "POST", "/v1/ns/" + strings.Repeat("n", 65) + "/events/forget", `{"key":"k"}`, 400, wire.CodeInvalid},
		{"an unknown operation", "POST", "/v1/ns/a/events/explode", `{}`, 404, wire.CodeNoRoute},
		{"another method", "GET", "/v1/ns/a/events/forget", ``, 405, wire.CodeMethod},
		{"not found", "POST", "/v1/ns/a/events/retry", `{"key":"never"}`, 404, wire.CodeNotFound},
		{"not the owner", "POST", "/v1/ns/a/events/complete", `{"key":"claimed","token":"not-it"}`, 409, wire.CodeNotOwner},
		{"a conflict", "POST", "/v1/ns/a/conversations/swap", `{"key":"conv","version":7,"data":{}}`, 409, wire.CodeConflict},
		// T1 holds {"topic":"x"}, 13 bytes: each patch fits, the result
		// does not (30 bytes over max_size 20; 1025 over the server's 1024,
		// which a bigger max_size does not lift).
		{"a merge over max_size", "POST", "/v1/ns/a/docs/merge", `{"scope":"thread","id":"T1","data":{"a":"yyyyyyyyyy"},"max_size":20}`, 413, wire.CodeTooLarge},
		{"a merge over the server's limit", "POST", "/v1/ns/a/docs/merge", `{"scope":"thread","id":"T1","data":{"a":"` + strings.Repeat("y", 1005) + `"},"max_size":1048576}`, 413, wire.CodeTooLarge},
		{"a negative max_size", "POST", "/v1/ns/a/conversations/merge-data", `{"key":"conv","data":{"a":1},"max_size":-1}`, 400, wire.CodeInvalid},
	} {
		code, pc, out := f.do(c.method, c.path, "the-admin-token", []byte(c.body))
		if code != c.status || pc != c.code {
			t.Errorf("%s: %d %s, want %d %s: %.300s", c.name, code, pc, c.status, c.code, out)
		}
	}
	if after := f.snapshot("a"); after != before {
		t.Fatalf("refused requests changed the state:\n%s\n---\n%s", before, after)
	}
}

func TestRateLimitAnswers429WithRetryAfter(t *testing.T) {
	f := newFixture(t, server.Config{Rate: 1, Burst: 2})
	body := []byte(`{"key":"k"}`)
	for i := 0; i < 2; i++ {
		if code, _, _ := f.do("POST", "/v1/ns/a/cache/get", "token-of-a", body); code != 200 {
			t.Fatalf("request %d within the burst: %d", i, code)
		}
	}
	req, _ := http.NewRequest("POST", f.http.URL+"/v1/ns/a/cache/get", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer token-of-a")
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the rate: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Another token has its own bucket.
	if code, _, _ := f.do("POST", "/v1/ns/b/cache/get", "token-of-b", body); code != 200 {
		t.Fatalf("another token: %d", code)
	}
}

func TestOperationsEndpoints(t *testing.T) {
	f := newFixture(t, server.Config{})
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _, b := f.do("GET", p, "", nil); code != 200 || string(b) != "ok\n" {
			t.Fatalf("%s: %d %q", p, code, b)
		}
	}
	f.do("POST", "/v1/ns/a/cache/get", "token-of-a", []byte(`{"key":"k"}`))
	f.do("POST", "/v1/ns/a/cache/get", "token-of-b", []byte(`{"key":"k"}`))
	code, _, b := f.do("GET", "/metrics", "", nil)
	if code != 200 || !strings.Contains(string(b), `botstate_requests_total{code="",op="cache/get",status="200"} 1`) ||
		!strings.Contains(string(b), `botstate_requests_total{code="forbidden",op="cache/get",status="403"} 1`) ||
		!strings.Contains(string(b), `botstate_request_seconds_bucket{op="cache/get"`) {
		t.Fatalf("metrics: %d\n%s", code, b)
	}
	if !strings.Contains(f.logs.String(), "op=cache/get") || !strings.Contains(f.logs.String(), "id=") {
		t.Fatalf("no request line with an id in the logs:\n%s", f.logs.String())
	}
	f.st.Close()
	if code, pc, _ := f.do("GET", "/readyz", "", nil); code != 503 || pc != wire.CodeUnavailable {
		t.Fatalf("readyz with the store closed: %d %s", code, pc)
	}
}

func TestWithoutTokensEveryNamespaceIsOpen(t *testing.T) {
	f := newFixture(t, server.Config{Tokens: map[string]string{}})
	if code, _, b := f.do("POST", "/v1/ns/anything/cache/get", "", []byte(`{"key":"k"}`)); code != 200 {
		t.Fatalf("no tokens configured: %d %s", code, b)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	st, _ := botstate.Open(context.Background(), "mem://")
	defer st.Close()
	for name, cfg := range map[string]server.Config{
		"no store":        {},
		"empty token":     {Store: st, Tokens: map[string]string{"": "a"}},
		"bad namespace":   {Store: st, Tokens: map[string]string{"t": "a/b"}},
		"a negative rate": {Store: st, Rate: -1},
	} {
		if _, err := server.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
