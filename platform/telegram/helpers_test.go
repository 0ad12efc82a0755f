package telegram

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
	_ "github.com/botstate/botstate/backend/postgres"
	_ "github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/dispatch"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "4242:TEST-token_abc"

// quiet is the tests' logger: what the webhook and the poller log is
// checked through their behaviour.
var quiet = slog.New(slog.DiscardHandler)

func uniqueNS() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "tg-" + hex.EncodeToString(b[:])
}

// openStore opens url in a fresh namespace, closed at the test's end.
func openStore(t *testing.T, url string) *botstate.Store {
	t.Helper()
	st, err := botstate.Open(context.Background(), url)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() { st.Close() })
	return st.Namespace(uniqueNS())
}

// recorder is a handler that records the updates it ran on.
type recorder struct {
	mu   sync.Mutex
	runs []*Update
	fn   Handler // what it does besides recording (nil: nothing)
}

func (r *recorder) handle(ctx context.Context, u *Update, s *Session) error {
	r.mu.Lock()
	r.runs = append(r.runs, u)
	r.mu.Unlock()
	if r.fn != nil {
		return r.fn(ctx, u, s)
	}
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.runs)
}

func (r *recorder) ids() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, u := range r.runs {
		out = append(out, u.ID)
	}
	return out
}

// newBot makes a dispatcher over st and a bot on it with the recorder's
// handler; both are closed at the test's end.
func newBot(t *testing.T, st *botstate.Store, cfg Config, rec *recorder) *Bot {
	t.Helper()
	d, err := dispatch.New(st, dispatch.Config{Lease: 2 * time.Second, Backoff: func(int) time.Duration { return 20 * time.Millisecond }, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("closing the dispatcher: %v", err)
		}
	})
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	if cfg.Conversations == nil {
		cfg.Conversations = st.Conversations()
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	cfg.Handler = rec.handle
	b, err := New(d, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventually waits up to 10 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settled waits until nothing of the namespace is pending.
func settled(t *testing.T, st *botstate.Store) {
	t.Helper()
	eventually(t, "every event settled", func() bool {
		evs, err := st.Events().Pending(context.Background(), 10)
		return err == nil && len(evs) == 0
	})
}

// msg is the JSON of a text message update.
func msg(id, chat, user int64, text string) []byte {
	return []byte(fmt.Sprintf(`{"update_id":%d,"message":{"message_id":%d,"date":1,"chat":{"id":%d,"type":"private"},"from":{"id":%d,"is_bot":false,"first_name":"A"},"text":%q}}`,
		id, id, chat, user, text))
}

// count reads a number from session or conversation data.
func count(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int:
		return int64(n)
	case float64:
		return int64(n)
	}
	return 0
}

// exampleBot is the setup of the examples: a dispatcher over st and a bot
// with secret "s3cret".
func exampleBot(st *botstate.Store, h Handler) (*Bot, *dispatch.Dispatcher) {
	d, err := dispatch.New(st, dispatch.Config{})
	if err != nil {
		panic(err)
	}
	b, err := New(d, Config{Token: "4242:AAE-example", SecretToken: "s3cret", Handler: h, Conversations: st.Conversations()})
	if err != nil {
		panic(err)
	}
	return b, d
}
