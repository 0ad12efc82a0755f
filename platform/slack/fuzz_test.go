package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slack-go/slack/socketmode"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
	"github.com/botstate/botstate/dispatch"
	"github.com/botstate/botstate/internal/fakeslack"
)

// fuzzBot is a bot over a fresh in-memory store, counting its handler's
// runs.
type fuzzBot struct {
	b    *Bot
	st   *botstate.Store
	d    *dispatch.Dispatcher
	runs atomic.Int64
}

// fuzzMaxBody is the fuzz bots' body limit: small, so that bodies over it
// are common.
const fuzzMaxBody = 4096

func newFuzzBot(t *testing.T) *fuzzBot {
	t.Helper()
	st, err := botstate.Open(context.Background(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	fb := &fuzzBot{st: st}
	quiet := slog.New(slog.DiscardHandler)
	if fb.d, err = dispatch.New(st, dispatch.Config{Lease: time.Minute, RecoverEvery: -1, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fb.b, err = New(fb.d, Config{SigningSecret: fakeslack.Secret, MaxBody: fuzzMaxBody, Logger: quiet,
		Handler: func(context.Context, *Event) error { fb.runs.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	return fb
}

// close stops the dispatcher, waiting for any handler that runs.
func (fb *fuzzBot) close(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fb.d.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func (fb *fuzzBot) export(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	if _, err := fb.st.ExportAll(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// wanted says what the bot must do with a body whose signature checks:
// the event and its key when it is one the bot handles, and whether it
// must be refused as bad.
func (fb *fuzzBot) wanted(t *testing.T, body []byte) (e *Event, key string, bad bool) {
	t.Helper()
	e, err := ParseEvent(body)
	if err != nil {
		if !errors.Is(err, botstate.ErrInvalidArgument) {
			t.Fatalf("ParseEvent(%q): untyped error %v", body, err)
		}
		return nil, "", true
	}
	if string(e.Callback) != string(body) {
		t.Fatalf("ParseEvent(%q) kept %q", body, e.Callback)
	}
	if !fb.b.events[e.Type] || fromBot(e) {
		return nil, "", false
	}
	key, err = Key(e)
	if err != nil {
		if !errors.Is(err, botstate.ErrInvalidArgument) && !errors.Is(err, botstate.ErrTooLarge) {
			t.Fatalf("Key(%+v): untyped error %v", e, err)
		}
		return e, "", true
	}
	return e, key, false
}

// FuzzEventsAPI sends any body to the Events API endpoint, signed with the
// secret (sign&3 == 0), with another secret (1), or not at all (2, 3):
// the bot never panics nor answers 5xx (the store cannot fail); a body over
// the limit gets 413 and any other request that is not Slack's 401; any
// refusal stores nothing and runs no handler; url_verification echoes its
// challenge; an event the bot handles is claimed in the store under its
// key before the 200.
func FuzzEventsAPI(f *testing.F) {
	for _, s := range []string{
		string(fakeslack.Message("Ev1", "message", "C1", "U1", "hello", "1700000000.000100", "")),
		string(fakeslack.Message("Ev2", "app_mention", "C1", "U1", "<@U0BOT> hi", "1700000000.000200", "1700000000.000100")),
		`{"token":"x","challenge":"c-123","type":"url_verification"}`,
		`{"type":"app_rate_limited","team_id":"T1","minute_rate_limited":1}`,
		`{"type":"event_callback","team_id":"T1","event_id":"Ev9","event":{"type":"reaction_added","user":"U1"}}`,
		`{"type":"event_callback","team_id":"T1","event_id":"Ev10","event":{"type":"message","bot_id":"B1","channel":"C1","ts":"1.2"}}`,
		`{"type":"event_callback","team_id":"T1","event_id":"Ev11","event":{"type":"app_mention","channel":{"id":"C1"},"event_ts":"1.3"}}`,
		`{"type":"event_callback","team_id":"T1\u0000","event_id":"E","event":{"type":"message"}}`,
		`{"type":"event_callback","team_id":"T0FAKE"}`,
		`{"type":"event_callback",`,
	} {
		f.Add([]byte(s), uint8(0), "")
	}
	f.Add([]byte(fakeslack.Message("Ev1", "message", "C1", "U1", "hello", "1700000000.000100", "")), uint8(1), "1")
	f.Add([]byte(fakeslack.Message("Ev1", "message", "C1", "U1", "hello", "1700000000.000100", "")), uint8(2), "x")
	f.Fuzz(func(t *testing.T, body []byte, sign uint8, retry string) {
		fb := newFuzzBot(t)
		before := fb.export(t)
		req := httptest.NewRequest(http.MethodPost, "/slack/events", bytes.NewReader(body))
		switch sign & 3 {
		case 0:
			req.Header = fakeslack.Sign(fakeslack.Secret, time.Now(), body)
		case 1:
			req.Header = fakeslack.Sign("not-the-secret", time.Now(), body)
		}
		req.Header.Set("X-Slack-Retry-Num", retry)
		rec := httptest.NewRecorder()
		fb.b.ServeHTTP(rec, req)
		seen := func(key string) bool {
			ok, err := fb.st.Events().Seen(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		var e *Event
		var key string
		bad := false
		switch {
		case rec.Code >= 500:
			t.Fatalf("%q: %d %s", body, rec.Code, rec.Body)
		case len(body) > fuzzMaxBody:
			// The body is read, up to the limit, before its signature is
			// checked.
			if rec.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("a body of %d bytes: %d %s", len(body), rec.Code, rec.Body)
			}
		case sign&3 != 0:
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("%q without the signature: %d %s", body, rec.Code, rec.Body)
			}
		default:
			var cb callback
			switch {
			case json.Unmarshal(body, &cb) != nil || cb.Type != "url_verification" && cb.Type != "app_rate_limited" && cb.Type != "event_callback":
				bad = true
			case cb.Type == "url_verification":
				var out map[string]string
				if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &out) != nil || out["challenge"] != cb.Challenge {
					t.Fatalf("url_verification %q: %d %s", body, rec.Code, rec.Body)
				}
			case cb.Type == "event_callback":
				e, key, bad = fb.wanted(t, body)
			}
			if bad != (rec.Code/100 == 4) || !bad && rec.Code != 200 {
				t.Fatalf("%q (bad: %v): %d %s", body, bad, rec.Code, rec.Body)
			}
		}
		if key != "" && rec.Code == 200 {
			if !seen(key) {
				t.Fatalf("%q answered 200 before its event %q was claimed", body, key)
			}
			if e.RetryNum = retryNum(retry); e.RetryNum < 0 {
				t.Fatalf("retry %q read as %d", retry, e.RetryNum)
			}
			fb.close(t)
			return
		}
		fb.close(t)
		if after := fb.export(t); after != before {
			t.Fatalf("%q (%d) stored:\n%s", body, rec.Code, after)
		}
		if n := fb.runs.Load(); n != 0 {
			t.Fatalf("%q (%d) ran the handler %d times", body, rec.Code, n)
		}
	})
}

// FuzzSocketModeEnvelope reads any Socket Mode message as the bot reads an
// envelope slack-go could not type (the same JSON slack-go decodes) and
// accepts it: the bot never panics; an envelope whose payload is not an
// event it can handle is acknowledged (it would not do better next time),
// stores nothing and runs no handler; an event it handles is claimed under
// its key before the acknowledgement; with a store that cannot fail, every
// envelope is acknowledged.
func FuzzSocketModeEnvelope(f *testing.F) {
	env := func(id string, payload []byte, retry int) []byte {
		b, _ := json.Marshal(map[string]any{"envelope_id": id, "type": "events_api", "payload": json.RawMessage(payload),
			"accepts_response_payload": false, "retry_attempt": retry, "retry_reason": ""})
		return b
	}
	f.Add(env("env-1", fakeslack.Message("Ev1", "message", "C1", "U1", "one", "1700000000.000100", ""), 0))
	f.Add(env("env-2", fakeslack.Message("Ev2", "app_mention", "C1", "U1", "<@U0BOT> one", "1700000000.000100", ""), 1))
	f.Add(env("env-u", []byte(`{"type":"event_callback","team_id":"T0FAKE","event_id":"EvU","event":{"type":"brand_new_event","channel":"C1","ts":"1700000009.000100"}}`), 0))
	f.Add(env("env-bad", []byte(`{"type":"event_callback","team_id":"T0FAKE"}`), 0))
	f.Add(env("env-nul", []byte(`{"type":"event_callback","team_id":"T\u0000","event_id":"E","event":{"type":"message","channel":"C1","ts":"1.1"}}`), 0))
	f.Add([]byte(`{"type":"hello","num_connections":1}`))
	f.Add([]byte(`{"envelope_id":"x","type":"events_api","payload":null}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		req, ok := badEnvelope(msg)
		var check socketmode.Request
		if ok != (json.Unmarshal(msg, &check) == nil && check.Type == socketmode.RequestTypeEventsAPI && check.EnvelopeID != "") {
			t.Fatalf("badEnvelope(%q) = %v", msg, ok)
		}
		if !ok {
			return
		}
		fb := newFuzzBot(t)
		before := fb.export(t)
		acked := fb.b.acceptEnvelope(context.Background(), req)
		if !acked {
			t.Fatalf("envelope %q left unacknowledged with a store that cannot fail", msg)
		}
		if _, key, bad := fb.wanted(t, req.Payload); key != "" && !bad {
			if ok, err := fb.st.Events().Seen(context.Background(), key); err != nil || !ok {
				t.Fatalf("envelope %q acknowledged before its event %q was claimed (%v)", msg, key, err)
			}
			fb.close(t)
			return
		}
		fb.close(t)
		if after := fb.export(t); after != before {
			t.Fatalf("envelope %q stored:\n%s", msg, after)
		}
		if n := fb.runs.Load(); n != 0 {
			t.Fatalf("envelope %q ran the handler %d times", msg, n)
		}
	})
}
