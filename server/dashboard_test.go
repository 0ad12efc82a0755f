package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/botstate/botstate/internal/wire"
	"github.com/botstate/botstate/server"
)

// page GETs (or POSTs form to) a dashboard path without following
// redirects; token goes as a bearer token, or as the login cookie when
// cookie is set.
func (f *fixture) page(method, path, token string, cookie bool, form url.Values) (int, http.Header, string) {
	f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, f.http.URL+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if token != "" {
		if cookie {
			req.AddCookie(&http.Cookie{Name: "botstate_token", Value: token})
		} else {
			req.Header.Set("Authorization", "Bearer "+token)
		}
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// secretsOfB are strings only namespace b's state holds (f.populate).
var secretsOfB = []string{"asking", "T1", "i1", `"z":1`, "claimed"}

// dashboardKeepsTenantsApart checks one dashboard route of namespace b
// (every list, for the list route): another tenant's token is refused as a
// header and as a cookie, showing nothing of b; no token is sent to the
// login; b's own token is served.
func dashboardKeepsTenantsApart(f *fixture, pattern string) {
	f.t.Helper()
	paths := []string{strings.ReplaceAll(pattern, "{ns}", "b")}
	if strings.Contains(pattern, "{list}") {
		paths = nil
		for _, l := range server.DashboardLists {
			paths = append(paths, strings.ReplaceAll(strings.ReplaceAll(pattern, "{ns}", "b"), "{list}", l))
		}
	}
	for _, p := range paths {
		for _, cookie := range []bool{false, true} {
			for _, tok := range []string{"token-of-a", "token-of-b-", "not-a-token"} {
				code, _, body := f.page("GET", p, tok, cookie, nil)
				want := http.StatusForbidden
				if tok != "token-of-a" {
					want = http.StatusSeeOther // to the login
				}
				if code != want {
					f.t.Errorf("GET %s with token %q (cookie %v): %d, want %d", p, tok, cookie, code, want)
				}
				for _, s := range secretsOfB {
					if strings.Contains(body, s) {
						f.t.Errorf("GET %s with token %q shows %q of namespace b:\n%s", p, tok, s, body)
					}
				}
			}
		}
		if code, h, _ := f.page("GET", p, "", false, nil); code != http.StatusSeeOther || h.Get("Location") != "/ui/login" {
			f.t.Errorf("GET %s without a token: %d to %q, want 303 to /ui/login", p, code, h.Get("Location"))
		}
		if code, _, body := f.page("GET", p, "token-of-b", false, nil); code != http.StatusOK {
			f.t.Errorf("GET %s with b's own token: %d %s", p, code, body)
		}
	}
}

func TestDashboardShowsEveryDomainOfTheNamespace(t *testing.T) {
	f := newFixture(t, server.Config{})
	f.populate("b", "token-of-b")
	later := time.Now().UTC().Add(time.Hour)
	for _, c := range []struct {
		op  string
		req any
	}{
		{"locks/acquire", wire.AcquireReq{Key: "lock", Owner: "second-worker", Strategy: "queue", Entry: []byte("waiting in line"), ExpiresAt: later}},
		{"events/record", wire.RecordReq{Key: "recorded-only", Payload: []byte("hello")}},
	} {
		b, _ := json.Marshal(c.req)
		if code, _, out := f.do("POST", "/v1/ns/b/"+c.op, "token-of-b", b); code != 200 {
			t.Fatalf("%s: %d %s", c.op, code, out)
		}
	}
	code, h, body := f.page("GET", "/ui/ns/b", "token-of-b", false, nil)
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("namespace page: %d %s\n%s", code, h.Get("Content-Type"), body)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	for section, want := range map[string][]string{
		"subscriptions": {"<code>T1</code>"},
		"locks":         {"<code>lock</code>", "<td>o</td>", "waiting in line"},
		"conversations": {"<code>conv</code>", "<td>asking</td>"},
		"pending":       {"<code>recorded-only</code>", "<code>claimed</code>"},
		"failed":        {"<code>failed</code>", "<td>bad</td>"},
		"issues":        {"<code>C1</code>", "<code>i1</code>", "{&#34;z&#34;:1}"},
		"activity":      {`id="chart"`},
	} {
		sec := sectionOf(t, body, section)
		for _, w := range want {
			if !strings.Contains(sec, w) {
				t.Errorf("section %s lacks %q:\n%s", section, w, sec)
			}
		}
	}
	// The lapsed claim shows once its lease ran out.
	if sec := sectionOf(t, body, "lapsed"); !strings.Contains(sec, "None.") {
		t.Errorf("lapsed claims before any lapsed:\n%s", sec)
	}
}

// sectionOf returns the <section id="id"> of a page.
func sectionOf(t *testing.T, page, id string) string {
	t.Helper()
	i := strings.Index(page, `<section id="`+id+`">`)
	if i < 0 {
		t.Fatalf("no section %s in:\n%s", id, page)
	}
	j := strings.Index(page[i:], "</section>")
	return page[i : i+j]
}

func TestDashboardPagesThroughALongList(t *testing.T) {
	f := newFixture(t, server.Config{})
	var want []string
	for i := range 23 {
		th := fmt.Sprintf("slack:T1:C 1/%03d&x", i)
		want = append(want, th)
		b, _ := json.Marshal(wire.SubscribeReq{Thread: th})
		if code, _, out := f.do("POST", "/v1/ns/b/threads/subscribe", "token-of-b", b); code != 200 {
			t.Fatalf("subscribe: %d %s", code, out)
		}
	}
	var got []string
	next := "/ui/ns/b/subscriptions?n=10"
	threadRE := regexp.MustCompile(`<td><code>(slack:T1:C 1/\d+&amp;x)</code></td>`)
	nextRE := regexp.MustCompile(`<a class="next" href="([^"]+)">`)
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("pages never end")
		}
		code, _, body := f.page("GET", next, "token-of-b", false, nil)
		if code != 200 {
			t.Fatalf("%s: %d %s", next, code, body)
		}
		for _, m := range threadRE.FindAllStringSubmatch(body, -1) {
			got = append(got, strings.ReplaceAll(m[1], "&amp;", "&"))
		}
		next = ""
		if m := nextRE.FindStringSubmatch(body); m != nil {
			next = strings.ReplaceAll(m[1], "&amp;", "&") + "&n=10"
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("paged through %v, want %v", got, want)
	}
}

func TestDashboardLoginSetsAStrictCookie(t *testing.T) {
	f := newFixture(t, server.Config{})
	code, _, body := f.page("POST", "/ui/login", "", false, url.Values{"token": {"wrong"}})
	if code != http.StatusUnauthorized || !strings.Contains(body, "not valid") {
		t.Fatalf("a wrong token: %d\n%s", code, body)
	}
	code, h, _ := f.page("POST", "/ui/login", "", false, url.Values{"token": {"token-of-b"}})
	c := h.Get("Set-Cookie")
	if code != http.StatusSeeOther || !strings.Contains(c, "botstate_token=token-of-b") ||
		!strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Strict") {
		t.Fatalf("login: %d, Set-Cookie %q", code, c)
	}
	// The index sends a tenant to its namespace; an admin sees the list.
	if code, h, _ := f.page("GET", "/", "token-of-b", true, nil); code != http.StatusSeeOther || h.Get("Location") != "/ui/ns/b" {
		t.Fatalf("index for a tenant: %d to %q", code, h.Get("Location"))
	}
	code, _, body = f.page("GET", "/", "the-admin-token", true, nil)
	if code != 200 || !strings.Contains(body, `href="/ui/ns/a"`) || !strings.Contains(body, `href="/ui/ns/b"`) {
		t.Fatalf("index for an admin: %d\n%s", code, body)
	}
	code, h, _ = f.page("POST", "/ui/logout", "token-of-b", true, url.Values{})
	if code != http.StatusSeeOther || !strings.Contains(h.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("logout: %d, Set-Cookie %q", code, h.Get("Set-Cookie"))
	}
	if strings.Contains(f.logs.String(), "token-of-b") {
		t.Fatalf("a log line holds a token:\n%s", f.logs.String())
	}
}

func TestDashboardRefusesBadInput(t *testing.T) {
	f := newFixture(t, server.Config{})
	for path, want := range map[string]int{
		"/ui/ns/b/nonsense":                                 http.StatusNotFound,
		"/ui/ns/b/subscriptions?n=abc":                      http.StatusBadRequest,
		"/ui/ns/b/subscriptions?n=0":                        http.StatusBadRequest,
		"/ui/ns/b/subscriptions?n=99999999":                 http.StatusBadRequest,
		"/ui/ns/b/locks?after=" + strings.Repeat("k", 2000): http.StatusBadRequest,
		"/ui/ns/b/locks?after=%ff":                          http.StatusBadRequest,
		"/ui/ns/" + url.PathEscape("a b") + "/locks":        http.StatusBadRequest,
		"/?ns=" + url.QueryEscape("bad\x00ns"):              http.StatusBadRequest,
	} {
		code, _, body := f.page("GET", path, "the-admin-token", false, nil)
		if code != want || !strings.Contains(body, `id="error"`) {
			t.Errorf("GET %s: %d, want %d with an error\n%s", path, code, want, body)
		}
	}
}

func TestDashboardChartCountsClaimsAndCompletions(t *testing.T) {
	f := newFixture(t, server.Config{})
	later := time.Now().UTC().Add(time.Hour)
	for i := range 3 {
		b, _ := json.Marshal(wire.ClaimReq{Key: fmt.Sprint("e", i), Token: fmt.Sprint("t", i), LeaseUntil: later})
		if code, _, out := f.do("POST", "/v1/ns/b/events/claim", "token-of-b", b); code != 200 {
			t.Fatalf("claim: %d %s", code, out)
		}
	}
	// A duplicate is not a claim granted; a completion by a stale token is
	// not a completion.
	b, _ := json.Marshal(wire.ClaimReq{Key: "e0", Token: "t9", LeaseUntil: later})
	f.do("POST", "/v1/ns/b/events/claim", "token-of-b", b)
	b, _ = json.Marshal(wire.CompleteReq{Key: "e1", Token: "wrong"})
	f.do("POST", "/v1/ns/b/events/complete", "token-of-b", b)
	for i := range 2 {
		b, _ := json.Marshal(wire.CompleteReq{Key: fmt.Sprint("e", i), Token: fmt.Sprint("t", i)})
		if code, _, out := f.do("POST", "/v1/ns/b/events/complete", "token-of-b", b); code != 200 {
			t.Fatalf("complete: %d %s", code, out)
		}
	}
	code, _, body := f.page("GET", "/ui/ns/b/activity.json", "token-of-b", false, nil)
	var points []server.ActivityPoint
	if err := json.Unmarshal([]byte(body), &points); code != 200 || err != nil || len(points) != 60 {
		t.Fatalf("activity.json: %d %v %d points", code, err, len(points))
	}
	var claimed, completed int64
	for _, p := range points {
		claimed += p.Claimed
		completed += p.Completed
	}
	if claimed != 3 || completed != 2 {
		t.Fatalf("chart counts %d claimed, %d completed; want 3 and 2", claimed, completed)
	}
	if code, _, body := f.page("GET", "/ui/ns/a/activity.json", "token-of-a", false, nil); code != 200 || strings.Contains(body, `"claimed":3`) {
		t.Fatalf("another namespace's chart: %d %s", code, body)
	}
}
