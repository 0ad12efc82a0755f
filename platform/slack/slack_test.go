package slack_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
	"github.com/botstate/botstate/dispatch"
	"github.com/botstate/botstate/internal/fakeslack"
	"github.com/botstate/botstate/platform/slack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seen records the events a handler ran for.
type seen struct {
	mu     sync.Mutex
	events []*slack.Event
	active map[string]int
	max    int
	ch     chan struct{}
}

func newSeen() *seen { return &seen{active: map[string]int{}, ch: make(chan struct{}, 100)} }

func (s *seen) handler(work time.Duration) slack.Handler {
	return func(ctx context.Context, ev *slack.Event) error {
		th := slack.ThreadScope(ev)
		s.mu.Lock()
		s.active[th]++
		s.max = max(s.max, s.active[th])
		s.mu.Unlock()
		time.Sleep(work)
		s.mu.Lock()
		s.active[th]--
		s.events = append(s.events, ev)
		s.mu.Unlock()
		s.ch <- struct{}{}
		return nil
	}
}

func (s *seen) snapshot() []*slack.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*slack.Event(nil), s.events...)
}

// waitN waits until n events were handled, then a little more, to catch
// extra runs.
func (s *seen) waitN(t *testing.T, n int) []*slack.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for len(s.snapshot()) < n {
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("handled %d events, want %d", len(s.snapshot()), n)
		}
	}
	time.Sleep(200 * time.Millisecond)
	return s.snapshot()
}

func newBot(t *testing.T, h slack.Handler) (*slack.Bot, *botstate.Store, *dispatch.Dispatcher) {
	t.Helper()
	st, err := botstate.Open(context.Background(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	d, err := dispatch.New(st, dispatch.Config{Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = d.Close(context.Background())
		st.Close()
	})
	b, err := slack.New(d, slack.Config{SigningSecret: fakeslack.Secret, Handler: h, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return b, st, d
}

func post(t *testing.T, srv *httptest.Server, body []byte, h http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := new(bytes.Buffer)
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String()
}

func signed(body []byte) http.Header { return fakeslack.Sign(fakeslack.Secret, time.Now(), body) }

func TestEventsAPIAnswersVerifiesAndDedupesByMessage(t *testing.T) {
	s := newSeen()
	b, st, _ := newBot(t, s.handler(0))
	srv := httptest.NewServer(b)
	defer srv.Close()

	// url_verification
	body := []byte(`{"token":"x","challenge":"c-123","type":"url_verification"}`)
	code, out := post(t, srv, body, signed(body))
	if code != 200 || !strings.Contains(out, `"challenge":"c-123"`) {
		t.Fatalf("url_verification: %d %q", code, out)
	}

	// A message, its retry, the same message as app_mention under a new
	// event id, and a resend under a third id: one run, with the retry
	// information of the delivery that was accepted.
	msg := fakeslack.Message("Ev1", "message", "C1", "U1", "hello", "1700000000.000100", "")
	h := signed(msg)
	h.Set("X-Slack-Retry-Num", "2")
	h.Set("X-Slack-Retry-Reason", "http_timeout")
	start := time.Now()
	if code, _ := post(t, srv, msg, h); code != 200 {
		t.Fatalf("event: %d", code)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("answered after %v", d)
	}
	for _, again := range [][]byte{
		msg,
		fakeslack.Message("Ev2", "app_mention", "C1", "U1", "<@U0BOT> hello", "1700000000.000100", ""),
		fakeslack.Message("Ev3", "message", "C1", "U1", "hello", "1700000000.000100", ""),
	} {
		if code, _ := post(t, srv, again, signed(again)); code != 200 {
			t.Fatalf("redelivery: %d", code)
		}
	}
	other := fakeslack.Message("Ev4", "app_mention", "C1", "U1", "<@U0BOT> more", "1700000001.000100", "1700000000.000100")
	post(t, srv, other, signed(other))
	evs := s.waitN(t, 2)
	if len(evs) != 2 {
		t.Fatalf("%d runs, want 2: %+v", len(evs), evs)
	}
	if e := evs[0]; e.EventID != "Ev1" || e.RetryNum != 2 || e.RetryReason != "http_timeout" || e.Via != "events_api" || e.Text != "hello" || e.Thread() != "1700000000.000100" {
		t.Fatalf("first event %+v", e)
	}
	if e := evs[1]; e.Type != "app_mention" || e.Thread() != "1700000000.000100" {
		t.Fatalf("second event %+v", e)
	}
	if _, err := evs[0].API(); err != nil {
		t.Fatalf("slackevents cannot parse the event: %v", err)
	}

	// Events the bot does not handle are answered 200 and not stored.
	for _, ignored := range [][]byte{
		[]byte(`{"type":"event_callback","team_id":"T0FAKE","event_id":"Ev9","event":{"type":"reaction_added","user":"U1","reaction":"eyes","item":{"type":"message","channel":"C1","ts":"1.2"},"event_ts":"1.3"}}`),
		[]byte(`{"type":"event_callback","team_id":"T0FAKE","event_id":"Ev10","event":{"type":"message","subtype":"bot_message","bot_id":"B0BOT","channel":"C1","text":"me","ts":"1700000002.000100"}}`),
		[]byte(`{"type":"event_callback","team_id":"T0FAKE","event_id":"Ev11","event":{"type":"message","bot_id":"B0BOT","channel":"C1","text":"me","ts":"1700000003.000100"}}`),
	} {
		if code, _ := post(t, srv, ignored, signed(ignored)); code != 200 {
			t.Fatalf("ignored event: %d", code)
		}
	}
	pending, _ := st.Events().Pending(context.Background(), 0)
	if len(pending) != 0 {
		t.Fatalf("pending after everything was handled: %+v", pending)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(s.snapshot()); n != 2 {
		t.Fatalf("%d runs after ignored events, want 2", n)
	}
}

func TestEventsAPIRefusesBadInputAndStoresNothing(t *testing.T) {
	s := newSeen()
	b, st, _ := newBot(t, s.handler(0))
	srv := httptest.NewServer(b)
	defer srv.Close()
	msg := fakeslack.Message("Ev1", "message", "C1", "U1", "hello", "1700000000.000100", "")
	forged := signed(msg)
	forged.Set("X-Slack-Signature", "v0="+strings.Repeat("ab", 32))
	stale := fakeslack.Sign(fakeslack.Secret, time.Now().Add(-6*time.Minute), msg)
	future := fakeslack.Sign(fakeslack.Secret, time.Now().Add(6*time.Minute), msg)
	wrongSecret := fakeslack.Sign("not-the-secret", time.Now(), msg)
	bad := []byte(`{"type":"event_callback",`)
	unknown := []byte(`{"type":"not_a_thing","team_id":"T0FAKE"}`)
	noEvent := []byte(`{"type":"event_callback","team_id":"T0FAKE","event_id":"Ev5"}`)
	noIDs := []byte(`{"type":"event_callback","event":{"type":"message","channel":"C1","ts":"1.1"}}`)
	nulID := []byte(`{"type":"event_callback","team_id":"T0FAKE","event_id":"Ev6","event":{"type":"message","channel":"C1\u0000","ts":"1.1"}}`)
	longID := []byte(`{"type":"event_callback","team_id":"T0FAKE","event_id":"Ev7","event":{"type":"message","channel":"C1","ts":"` + strings.Repeat("1", 2000) + `"}}`)
	big := append(append([]byte(`{"type":"event_callback","pad":"`), bytes.Repeat([]byte("x"), 2<<20)...), '"', '}')
	for _, c := range []struct {
		name string
		body []byte
		h    http.Header
		code int
	}{
		{"unsigned", msg, http.Header{"Content-Type": {"application/json"}}, 401},
		{"forged signature", msg, forged, 401},
		{"wrong secret", msg, wrongSecret, 401},
		{"stale timestamp", msg, stale, 401},
		{"timestamp from the future", msg, future, 401},
		{"signature of another body", []byte(strings.Replace(string(msg), "hello", "HELLO", 1)), signed(msg), 401},
		{"malformed JSON", bad, signed(bad), 400},
		{"unknown type", unknown, signed(unknown), 400},
		{"callback without event", noEvent, signed(noEvent), 400},
		{"callback without ids", noIDs, signed(noIDs), 400},
		{"id with NUL (no retry would be stored)", nulID, signed(nulID), 400},
		{"id over 1 KiB", longID, signed(longID), 413},
		{"oversized body", big, signed(big), 413},
	} {
		if code, out := post(t, srv, c.body, c.h); code != c.code {
			t.Errorf("%s: %d %q, want %d", c.name, code, out, c.code)
		}
	}
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(s.snapshot()); n != 0 {
		t.Fatalf("a refused request ran the handler %d times", n)
	}
	if seen, _ := st.Events().Seen(context.Background(), mustKey(t, "C1", "1700000000.000100")); seen {
		t.Fatal("a refused request stored its event")
	}
}

func mustKey(t *testing.T, channel, ts string) string {
	k, err := botstate.SlackMessageKey(fakeslack.TeamID, channel, ts)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestEventsAPIAnswers503WhenTheStoreFails(t *testing.T) {
	s := newSeen()
	b, st, _ := newBot(t, s.handler(0))
	srv := httptest.NewServer(b)
	defer srv.Close()
	st.Close() // every store call now fails
	msg := fakeslack.Message("Ev1", "message", "C1", "U1", "hello", "1700000000.000100", "")
	if code, _ := post(t, srv, msg, signed(msg)); code != http.StatusServiceUnavailable {
		t.Fatalf("event with the store down: %d, want 503 so that Slack delivers it again", code)
	}
}

func TestSocketModeAcknowledgesAcceptedEnvelopesAndDedupes(t *testing.T) {
	fake := fakeslack.New()
	defer fake.Close()
	s := newSeen()
	b, _, _ := newBot(t, s.handler(5*time.Millisecond))
	api := slackapi.New(fakeslack.BotToken, slackapi.OptionAppLevelToken(fakeslack.AppToken), slackapi.OptionAPIURL(fake.APIURL()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.RunSocketMode(ctx, socketmode.New(api)) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("RunSocketMode: %v", err)
		}
	}()
	waitConn(t, fake)

	send := func(envID string, payload []byte, retry int) {
		t.Helper()
		if _, lat, err := fake.SendEnvelope(ctx, envID, payload, retry, "", 3*time.Second); err != nil || lat > 3*time.Second {
			t.Fatalf("envelope %s: acked after %v, %v", envID, lat, err)
		}
	}
	m1 := fakeslack.Message("Ev1", "message", "C1", "U1", "one", "1700000000.000100", "")
	send("env-1", m1, 0)
	send("env-1", m1, 0) // the same envelope again, retry_attempt 0
	send("env-2", m1, 1)
	send("env-3", fakeslack.Message("Ev2", "app_mention", "C1", "U1", "<@U0BOT> one", "1700000000.000100", ""), 0)
	for i := 2; i <= 6; i++ { // a thread's replies, in order
		send(fmt.Sprintf("env-t%d", i), fakeslack.Message(fmt.Sprintf("EvT%d", i), "message", "C1", "U1", fmt.Sprint(i),
			fmt.Sprintf("1700000000.00020%d", i), "1700000000.000100"), 0)
	}
	// Unknown to slack-go's slackevents, and malformed: acknowledged all the same.
	send("env-u", []byte(`{"type":"event_callback","team_id":"T0FAKE","event_id":"EvU","event":{"type":"brand_new_event","channel":"C1","ts":"1700000009.000100"}}`), 0)
	send("env-bad", []byte(`{"type":"event_callback","team_id":"T0FAKE"}`), 0)
	evs := s.waitN(t, 6)
	if len(evs) != 6 {
		t.Fatalf("%d runs, want 6", len(evs))
	}
	if evs[0].Via != "socket_mode" || evs[0].EventID != "Ev1" {
		t.Fatalf("first %+v", evs[0])
	}
	for i, e := range evs[1:] {
		if want := fmt.Sprint(i + 2); e.Text != want {
			t.Fatalf("run %d handled %q, want %q (thread order)", i+1, e.Text, want)
		}
	}
	if s.max != 1 {
		t.Fatalf("%d handlers of one thread at once", s.max)
	}
	for _, a := range fake.Acks() {
		if a.Latency > 3*time.Second {
			t.Fatalf("envelope %s acked after %v", a.EnvelopeID, a.Latency)
		}
	}
}

func waitConn(t *testing.T, fake *fakeslack.Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(fake.Conns()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the bot did not open a Socket Mode connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKeysAndScopes(t *testing.T) {
	msg := &slack.Event{TeamID: "T1", EventID: "Ev1", Channel: "C1", TS: "1.2"}
	reply := &slack.Event{TeamID: "T1", EventID: "Ev2", Channel: "C1", TS: "1.3", ThreadTS: "1.2"}
	noChannel := &slack.Event{TeamID: "T1", EventID: "Ev3"}
	k1, _ := slack.Key(msg)
	k2, _ := slack.Key(&slack.Event{TeamID: "T1", EventID: "Ev9", Channel: "C1", TS: "1.2"})
	k3, _ := slack.Key(noChannel)
	if k1 != k2 {
		t.Fatalf("one message under two event ids: %q, %q", k1, k2)
	}
	if want, _ := botstate.SlackEventKey("T1", "Ev3"); k3 != want {
		t.Fatalf("event without a message: %q, want %q", k3, want)
	}
	if slack.ThreadScope(msg) != slack.ThreadScope(reply) {
		t.Fatal("a message and its reply in different scopes")
	}
	if slack.ThreadScope(&slack.Event{TeamID: "T1", Channel: "C1/x", TS: "1"}) == slack.ThreadScope(&slack.Event{TeamID: "T1", Channel: "C1", TS: "x/1"}) {
		t.Fatal("separators in ids made two scopes collide")
	}
	if _, err := slack.New(nil, slack.Config{}); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Fatalf("New without dispatcher: %v", err)
	}
}
