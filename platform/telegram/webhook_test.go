package telegram

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/botstate/botstate"
)

const testSecret = "s3cret_Token-1"

// post sends one request to the bot's webhook and returns the status and
// body.
func post(t *testing.T, h http.Handler, method, secret string, body io.Reader, length int64) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, "/telegram", body)
	if length >= 0 {
		r.ContentLength = length
	}
	if secret != "" {
		r.Header.Set(SecretHeader, secret)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// TestWebhookRefuses: every refused request gets its 4xx, stores nothing
// and runs no handler.
func TestWebhookRefuses(t *testing.T) {
	st := openStore(t, "mem://")
	rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
		s.Set("touched", true)
		return nil
	}}
	b := newBot(t, st, Config{SecretToken: testSecret, MaxBody: 1024}, rec)
	good := msg(1, 7, 7, "hello")
	big := msg(2, 7, 7, strings.Repeat("x", 2000))
	tests := []struct {
		name   string
		method string
		secret string
		body   []byte
		length int64 // -1: as httptest sets it; else the declared Content-Length
		want   int
	}{
		{"GET", http.MethodGet, testSecret, nil, -1, http.StatusMethodNotAllowed},
		{"PUT", http.MethodPut, testSecret, good, -1, http.StatusMethodNotAllowed},
		{"HEAD", http.MethodHead, testSecret, nil, -1, http.StatusMethodNotAllowed},
		{"no secret", http.MethodPost, "", good, -1, http.StatusUnauthorized},
		{"wrong secret", http.MethodPost, "s3cret_Token-2", good, -1, http.StatusUnauthorized},
		{"secret prefix", http.MethodPost, "s3cret", good, -1, http.StatusUnauthorized},
		{"secret longer", http.MethodPost, testSecret + "x", good, -1, http.StatusUnauthorized},
		{"oversized, declared", http.MethodPost, testSecret, big, -1, http.StatusRequestEntityTooLarge},
		{"oversized, undeclared", http.MethodPost, testSecret, big, 0, http.StatusRequestEntityTooLarge},
		{"empty body", http.MethodPost, testSecret, nil, -1, http.StatusBadRequest},
		{"malformed JSON", http.MethodPost, testSecret, []byte(`{"update_id":1,`), -1, http.StatusBadRequest},
		{"not an object", http.MethodPost, testSecret, []byte(`[1,2]`), -1, http.StatusBadRequest},
		{"no update_id", http.MethodPost, testSecret, []byte(`{"message":{"chat":{"id":7},"text":"x"}}`), -1, http.StatusBadRequest},
		{"update_id a string", http.MethodPost, testSecret, []byte(`{"update_id":"1"}`), -1, http.StatusBadRequest},
		{"wrong field types", http.MethodPost, testSecret, []byte(`{"update_id":1,"message":{"chat":{"id":"7"}}}`), -1, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != nil {
				body = bytes.NewReader(tt.body)
			}
			code, text := post(t, b, tt.method, tt.secret, body, tt.length)
			if code != tt.want {
				t.Fatalf("status %d (%s), want %d", code, text, tt.want)
			}
		})
	}
	// Nothing stored, nothing run: no event under update 1 or 2, no
	// conversation, no handler.
	ctx := context.Background()
	for _, id := range []int64{1, 2} {
		key, _ := b.UpdateKey(id)
		if e, err := st.Events().Get(ctx, key); err == nil {
			t.Errorf("update %d is stored: %+v", id, e)
		}
	}
	if evs, err := st.Events().Pending(ctx, 10); err != nil || len(evs) > 0 {
		t.Errorf("pending events %v (%v)", evs, err)
	}
	key, _ := b.ConversationKey(&Update{ChatID: 7, UserID: 7})
	if c, err := st.Conversations().Get(ctx, key); err != nil || c.Exists() {
		t.Errorf("conversation %+v (%v)", c, err)
	}
	if n := rec.count(); n != 0 {
		t.Errorf("the handler ran %d times", n)
	}

	// The genuine delivery of update 1 still works afterwards.
	if code, text := post(t, b, http.MethodPost, testSecret, bytes.NewReader(good), -1); code != http.StatusOK {
		t.Fatalf("genuine delivery: %d %s", code, text)
	}
	eventually(t, "the handler", func() bool { return rec.count() == 1 })
}

// TestWebhookDuplicates: one update delivered many times at once, and again
// after it was handled, runs its handler once; every delivery gets 200.
func TestWebhookDuplicates(t *testing.T) {
	st := openStore(t, "mem://")
	rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
		s.Set("n", count(s.Get("n"))+1)
		return nil
	}}
	b := newBot(t, st, Config{SecretToken: testSecret}, rec)
	var wg sync.WaitGroup
	outcomes := make(chan string, 40)
	for id := int64(1); id <= 4; id++ {
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, body := post(t, b, http.MethodPost, testSecret, bytes.NewReader(msg(id, 7, 7, "x")), -1)
				if code != http.StatusOK {
					t.Errorf("update %d: %d %s", id, code, body)
				}
				outcomes <- body
			}()
		}
	}
	wg.Wait()
	close(outcomes)
	dups := 0
	for o := range outcomes {
		if strings.Contains(o, `"duplicate"`) {
			dups++
		}
	}
	if dups != 36 {
		t.Errorf("%d duplicates among 40 deliveries of 4 updates, want 36", dups)
	}
	settled(t, st)
	for id := int64(1); id <= 4; id++ {
		if code, body := post(t, b, http.MethodPost, testSecret, bytes.NewReader(msg(id, 7, 7, "x")), -1); code != http.StatusOK || !strings.Contains(body, "duplicate") {
			t.Errorf("late redelivery of %d: %d %s", id, code, body)
		}
	}
	if ids := rec.ids(); len(ids) != 4 {
		t.Fatalf("handler ran on %v, want each of 4 updates once", ids)
	}
	key, _ := b.ConversationKey(&Update{ChatID: 7, UserID: 7})
	c, _ := st.Conversations().Get(context.Background(), key)
	if got := count(c.Data["n"]); got != 4 {
		t.Fatalf("counter %d, want 4", got)
	}
}

// TestWebhookStoreFailure: an update the store cannot accept gets a 5xx,
// so that Telegram delivers it again.
func TestWebhookStoreFailure(t *testing.T) {
	root, err := botstate.Open(context.Background(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	st := root.Namespace(uniqueNS())
	rec := &recorder{}
	b := newBot(t, st, Config{}, rec)
	root.Close()
	code, body := post(t, b, http.MethodPost, "", bytes.NewReader(msg(1, 7, 7, "x")), -1)
	if code < 500 {
		t.Fatalf("status %d (%s), want 5xx", code, body)
	}
	if rec.count() != 0 {
		t.Fatal("the handler ran")
	}
}

// TestWebhookWithoutSecret: a bot without a secret token takes any POST
// (for bots behind their own authentication).
func TestWebhookWithoutSecret(t *testing.T) {
	st := openStore(t, "mem://")
	rec := &recorder{}
	b := newBot(t, st, Config{}, rec)
	for i, secret := range []string{"", "anything"} {
		if code, body := post(t, b, http.MethodPost, secret, bytes.NewReader(msg(int64(i+1), 7, 7, "x")), -1); code != http.StatusOK {
			t.Fatalf("%d %s", code, body)
		}
	}
	eventually(t, "two runs", func() bool { return rec.count() == 2 })
}

func ExampleBot_ServeHTTP() {
	ctx := context.Background()
	st, _ := botstate.Open(ctx, "mem://")
	defer st.Close()
	bot := st.Namespace("bot-4242")
	done := make(chan struct{})
	b, d := exampleBot(bot, func(ctx context.Context, u *Update, s *Session) error {
		s.Set("last", u.Text)
		close(done)
		return nil
	})
	srv := httptest.NewServer(b)
	defer srv.Close()
	for range 2 { // Telegram delivers the update twice
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{"update_id":1,"message":{"chat":{"id":7},"from":{"id":7},"text":"hi"}}`))
		req.Header.Set(SecretHeader, "s3cret")
		resp, _ := http.DefaultClient.Do(req)
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, string(out))
	}
	<-done
	_ = d.Close(ctx)
	key, _ := b.ConversationKey(&Update{ChatID: 7, UserID: 7})
	c, _ := bot.Conversations().Get(ctx, key)
	fmt.Println(c.Data["last"])
	// Output:
	// 200 {"ok":true,"outcome":"started"}
	// 200 {"ok":true,"outcome":"duplicate"}
	// hi
}
