package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/client"
	_ "github.com/botstate/botstate/backend/file"
	"github.com/botstate/botstate/server"
	"github.com/botstate/botstate/statetest"
)

// TestDashboardInABrowser starts a live server on the embedded file backend,
// fills a namespace with state of every domain through the HTTP client (as a
// bot in another process would), and drives headless Chromium through the
// dashboard: log in with the tenant's token, read every section, page
// through a list, watch the chart draw from the server's counters, and be
// refused another tenant's namespace. It writes a screenshot of the
// namespace page to BOTSTATE_SCREENSHOT (the README's picture) or to the
// test's temporary directory.
//
// Chromium comes from Debian's package, installed by
// scripts/services/chromium.sh (BOTSTATE_CHROMIUM).
func TestDashboardInABrowser(t *testing.T) {
	chromium := statetest.BackendURL(t, "BOTSTATE_CHROMIUM")
	ctx := context.Background()
	st, err := botstate.Open(ctx, "file://"+filepath.Join(t.TempDir(), "botstate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := server.New(server.Config{Store: st, Tokens: map[string]string{
		"support-bot-token": "support-bot", "other-token": "other", "admin-token": server.Admin,
	}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	fillThroughTheClient(t, hs.URL+"?token=support-bot-token")
	other, err := botstate.Open(ctx, hs.URL+"?token=other-token")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Namespace("other").Conversations().SetState(ctx, "secret-conversation", "hidden"); err != nil {
		t.Fatal(err)
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// The first call starts the browser, with no deadline of its own (a
	// deadline on it would stop the browser); every later step has one.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b := browser{t: t, ctx: bctx}

	// Log in: / sends a browser without a token to the form.
	b.do("log in",
		chromedp.Navigate(hs.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login")))
	if loginURL := get(b, "location", chromedp.Location()); !strings.HasSuffix(loginURL, "/ui/login") {
		t.Errorf("/ without a token went to %s, want the login", loginURL)
	}
	b.do("log in",
		chromedp.SendKeys(chromedp.CSS("#token"), "support-bot-token"),
		chromedp.Submit(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#ns-name")))

	// Every section shows what the bot stored.
	for id, want := range map[string][]string{
		"ns-name":       {"support-bot"},
		"subscriptions": {"slack:T1:C1:1700000000.000100", "slack:T1:C1:1700000000.000109", "Next page"},
		"locks":         {"slack:T1:C1:1700000000.000100", "worker-a", "worker-b's message", "worker-c's message"},
		"conversations": {"telegram:42:7", "asking_email", "signup", "ada@example.com"},
		"pending":       {"evt-recorded", "evt-released", "evt-claimed"},
		"lapsed":        {"evt-lapsed"},
		"failed":        {"evt-poison", "handler panicked"},
		"issues":        {"C-alerts", "issue-1", "disk full"},
	} {
		text := get(b, id, chromedp.Text(chromedp.CSS("#"+id)))
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("section %s lacks %q; it reads:\n%s", id, w, text)
			}
		}
	}
	if page := get(b, "page", chromedp.Text(chromedp.CSS("body"))); strings.Contains(page, "secret-conversation") {
		t.Errorf("the page shows another tenant's conversation")
	}

	// The chart draws the claims and completions counted by this server.
	b.do("chart", chromedp.WaitVisible(chromedp.CSS("#chart[data-drawn]")))
	peak := get(b, "peak", chromedp.AttributeValue(chromedp.CSS("#chart-max"), "data-max"))
	bars := get(b, "bars", chromedp.Evaluate[int](`document.querySelectorAll("#chart rect:not([height='0'])").length`))
	if peak.Value == "0" || bars == 0 {
		t.Errorf("the chart drew nothing: peak %q, %d bars", peak.Value, bars)
	}

	shot := os.Getenv("BOTSTATE_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "dashboard.png")
	}
	png := get(b, "screenshot", chromedp.FullScreenshot(100))
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// Page through the subscriptions: the next page starts after the tenth.
	b.do("next page",
		chromedp.Click(chromedp.CSS("#subscriptions a.next")),
		chromedp.WaitVisible(chromedp.CSS(`a[href$="/subscriptions"]`)))
	if second := get(b, "second page", chromedp.Text(chromedp.CSS("#subscriptions"))); !strings.Contains(second, "1700000000.000110") ||
		strings.Contains(second, "1700000000.000109") {
		t.Errorf("the second page of subscriptions reads:\n%s", second)
	}

	// Another tenant's namespace is refused, in the browser too.
	b.do("another namespace",
		chromedp.Navigate(hs.URL+"/ui/ns/other"),
		chromedp.WaitVisible(chromedp.CSS("#error")))
	if refused := get(b, "refusal", chromedp.Text(chromedp.CSS("body"))); !strings.Contains(refused, "403") ||
		strings.Contains(refused, "secret-conversation") {
		t.Errorf("another tenant's namespace shows:\n%s", refused)
	}
}

// browser runs steps in one tab, each call with a deadline.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func (b browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	get(b, what, chromedp.Steps(steps...))
}

func get[T any](b browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// fillThroughTheClient stores state of every domain in the namespace of the
// token in url, through the HTTP client backend. Some of it is written an
// hour in the past (the client sends each call's time), so a claim has
// lapsed by the time the page is read.
func fillThroughTheClient(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	open := func(opts ...botstate.Option) *botstate.Store {
		st, err := botstate.Open(ctx, url, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st.Namespace("support-bot")
	}
	st := open()
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	past := statetest.NewClock()
	past.Advance(-time.Hour)
	old := open(botstate.WithClock(past))

	ev := st.Events()
	_, err := ev.Record(ctx, "evt-recorded", []byte(`{"text":"hi"}`))
	check("record", err)
	c, err := ev.Claim(ctx, "evt-released", []byte(`{"text":"retry me"}`), time.Minute)
	check("claim", err)
	check("release", ev.ReleaseAfter(ctx, c.Token, time.Minute, "rate limited by the platform"))
	_, err = ev.Claim(ctx, "evt-claimed", []byte(`{"text":"in flight"}`), time.Hour)
	check("claim", err)
	for i := range 4 {
		c, err := ev.Claim(ctx, fmt.Sprint("evt-done-", i), nil, time.Minute)
		check("claim", err)
		check("complete", ev.Complete(ctx, c.Token, []byte("ok")))
	}
	_, err = old.Events().Claim(ctx, "evt-lapsed", []byte(`{"text":"the worker died"}`), time.Minute)
	check("claim in the past", err)
	for range 3 {
		c, err := ev.Claim(ctx, "evt-poison", []byte(`{"text":"boom"}`), time.Minute)
		check("claim poison", err)
		check("release poison", ev.Release(ctx, c.Token))
	}
	c, err = ev.Claim(ctx, "evt-poison", nil, time.Minute)
	check("claim poison", err)
	check("fail", ev.Fail(ctx, c.Token, "handler panicked: index out of range"))

	for i := range 14 {
		check("subscribe", st.Threads().Subscribe(ctx, fmt.Sprintf("slack:T1:C1:1700000000.%06d", 100+i), 24*time.Hour))
	}
	_, err = st.Conversations().Start(ctx, "telegram:42:7", &botstate.Flow{Name: "signup", Initial: "asking_email"})
	check("start", err)
	_, err = st.Conversations().UpdateData(ctx, "telegram:42:7", map[string]any{"email": "ada@example.com", "step": 2})
	check("update data", err)
	_, err = st.Conversations().SetState(ctx, "slack:T1:D9", "idle")
	check("set state", err)

	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: 10 * time.Minute, EntryTTL: 5 * time.Minute}
	l := st.Locks()
	for _, o := range []string{"worker-a", "worker-b", "worker-c"} {
		_, err := l.Acquire(ctx, "slack:T1:C1:1700000000.000100", o, []byte(o+"'s message"), p)
		check("acquire", err)
	}
	_, err = l.Acquire(ctx, "telegram:42:7", "worker-b", nil, p)
	check("acquire", err)

	in := st.Incidents()
	check("alert", in.SaveAlert(ctx, &botstate.BasicAlert{Channel: "C-alerts", ID: "alert-1", Timestamp: time.Now(),
		Body: json.RawMessage(`{"summary":"disk full on db-1"}`)}))
	check("issues", in.SaveIssues(ctx, openIssue{channel: "C-alerts", id: "issue-1", corr: "db-1/disk",
		post: "1700000000.000500", body: `{"title":"disk full on db-1"}`}))
}

// openIssue is an open issue as a bot's own type would be.
type openIssue struct{ channel, id, corr, post, body string }

func (i openIssue) ChannelID() string            { return i.channel }
func (i openIssue) UniqueID() string             { return i.id }
func (i openIssue) GetCorrelationID() string     { return i.corr }
func (i openIssue) IsOpen() bool                 { return true }
func (i openIssue) CurrentPostID() string        { return i.post }
func (i openIssue) MarshalJSON() ([]byte, error) { return []byte(i.body), nil }
