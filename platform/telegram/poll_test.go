package telegram

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/internal/faketelegram"
)

// polling runs b.Poll until the test ends (or stop is called) and reports
// its result.
func polling(t *testing.T, b *Bot) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Poll(ctx) }()
	var res error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case res = <-done:
			case <-time.After(10 * time.Second):
				t.Error("Poll did not return after its context ended")
			}
		}
		return res
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// offsets lists the offsets of the fake's answered getUpdates calls and the
// ids each returned.
func offsets(fake *faketelegram.Server) (offs []int64, returned [][]int64) {
	for _, c := range fake.Calls("getUpdates") {
		if c.Returned != nil {
			offs, returned = append(offs, c.Offset), append(returned, c.Returned)
		}
	}
	return offs, returned
}

// TestPollOffsets: getUpdates starts without an offset, then confirms the
// updates accepted (offset = last + 1); every update is handled once.
func TestPollOffsets(t *testing.T) {
	fake := faketelegram.New(testToken)
	t.Cleanup(fake.Close)
	st := openStore(t, "mem://")
	rec := &recorder{}
	b := newBot(t, st, Config{APIURL: fake.URL, PollTimeout: time.Second}, rec)
	a := fake.Message(7, 7, "one")
	bb := fake.Message(8, 8, "two")
	stop := polling(t, b)
	eventually(t, "two runs", func() bool { return rec.count() == 2 })
	c := fake.Message(7, 7, "three")
	eventually(t, "three runs", func() bool { return rec.count() == 3 })
	eventually(t, "the last update confirmed", func() bool { return confirmed(fake, c.ID+1) })
	if p := fake.Pending(); len(p) != 0 {
		t.Errorf("updates %v still pending at the fake", p)
	}
	if err := stop(); err != nil {
		t.Fatalf("Poll = %v, want nil once its context ended", err)
	}
	offs, ret := offsets(fake)
	if offs[0] != 0 || !reflect.DeepEqual(ret[0], []int64{a.ID, bb.ID}) {
		t.Errorf("first getUpdates: offset %d returned %v", offs[0], ret[0])
	}
	if offs[1] != bb.ID+1 || !reflect.DeepEqual(ret[1], []int64{c.ID}) {
		t.Errorf("second getUpdates: offset %d returned %v, want offset %d", offs[1], ret[1], bb.ID+1)
	}
	if ids := rec.ids(); len(ids) != 3 {
		t.Errorf("handled %v", ids)
	}
}

// confirmed reports whether a getUpdates call with offset off was answered:
// the poller confirmed every update before it.
func confirmed(fake *faketelegram.Server, off int64) bool {
	offs, _ := offsets(fake)
	for _, o := range offs {
		if o == off {
			return true
		}
	}
	return false
}

// TestPollStoreErrorRetries: an update the store failed to accept is not
// confirmed: it is asked for again, with those after it, and handled.
func TestPollStoreErrorRetries(t *testing.T) {
	fake := faketelegram.New(testToken)
	t.Cleanup(fake.Close)
	st := openStore(t, "mem://")
	rec := &recorder{}
	var slowOnce atomic.Bool
	// The first acceptance of chat 8's update outlasts its deadline, as a
	// store that does not answer in time.
	scope := func(u *Update) string {
		if u.ChatID == 8 && slowOnce.CompareAndSwap(false, true) {
			time.Sleep(150 * time.Millisecond)
		}
		return DefaultScope(u)
	}
	b := newBot(t, st, Config{APIURL: fake.URL, PollTimeout: time.Second, DispatchTimeout: 100 * time.Millisecond, Scope: scope}, rec)
	a := fake.Message(7, 7, "accepted")
	f := fake.Message(8, 8, "fails once")
	c := fake.Message(9, 9, "behind it")
	polling(t, b)
	eventually(t, "three runs", func() bool { return rec.count() == 3 })
	settled(t, st)
	offs, ret := offsets(fake)
	if len(offs) < 2 || offs[0] != 0 || !reflect.DeepEqual(ret[0], []int64{a.ID, f.ID, c.ID}) ||
		offs[1] != f.ID || !reflect.DeepEqual(ret[1], []int64{f.ID, c.ID}) {
		t.Fatalf("getUpdates offsets %v returned %v; want 0 then %d (the failed update again)", offs, ret, f.ID)
	}
	if ids := rec.ids(); len(ids) != 3 {
		t.Fatalf("handled %v, want each once", ids)
	}
}

// TestPollAPIErrors: failed getUpdates calls (5xx, 429 with retry_after)
// are retried after a pause; a refused token ends Poll with an error
// that does not show the token.
func TestPollAPIErrors(t *testing.T) {
	fake := faketelegram.New(testToken)
	t.Cleanup(fake.Close)
	st := openStore(t, "mem://")
	rec := &recorder{}
	b := newBot(t, st, Config{APIURL: fake.URL, PollTimeout: time.Second}, rec)
	fake.Fail("getUpdates", http.StatusInternalServerError, http.StatusTooManyRequests)
	fake.Message(7, 7, "x")
	start := time.Now()
	polling(t, b)
	eventually(t, "the run", func() bool { return rec.count() == 1 })
	// 1 s ±20%, then 429's retry_after: 1 s.
	if took := time.Since(start); took < 1800*time.Millisecond {
		t.Errorf("handled after %v: the failures were not backed off", took)
	}
	failed := 0
	for _, c := range fake.Calls("getUpdates") {
		if c.Returned == nil {
			failed++
		}
	}
	if failed != 2 {
		t.Errorf("%d failed calls recorded, want 2", failed)
	}

	bad := newBot(t, st, Config{Token: "4242:wrong", APIURL: fake.URL, PollTimeout: time.Second}, rec)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := bad.Poll(ctx)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != http.StatusUnauthorized || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("Poll with a refused token = %v", err)
	}
}

// TestPollDuplicates: several pollers see the same updates (as a second
// replica or a redelivery would); each update is handled once, and the
// conversation counts each once.
func TestPollDuplicates(t *testing.T) {
	fake := faketelegram.New(testToken)
	t.Cleanup(fake.Close)
	st := openStore(t, "mem://")
	rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
		s.Set("n", count(s.Get("n"))+1)
		return nil
	}}
	// Three bots, each on a dispatcher of its own: three replicas.
	var bots []*Bot
	for range 3 {
		bots = append(bots, newBot(t, st, Config{APIURL: fake.URL, PollTimeout: time.Second}, rec))
	}
	for _, b := range bots {
		polling(t, b)
	}
	for i := 0; i < 30; i++ {
		fake.Message(7, 7, "x")
	}
	eventually(t, "30 runs", func() bool { return rec.count() >= 30 })
	settled(t, st)
	time.Sleep(50 * time.Millisecond)
	if n := rec.count(); n != 30 {
		t.Fatalf("%d runs for 30 updates", n)
	}
	if c := conv(t, bots[0], st, 7, 7); count(c.Data["n"]) != 30 {
		t.Fatalf("counter %v, want 30", c.Data["n"])
	}
	seen := map[int64]int{}
	for _, c := range fake.Calls("getUpdates") {
		for _, id := range c.Returned {
			seen[id]++
		}
	}
	redelivered := 0
	for _, n := range seen {
		if n > 1 {
			redelivered++
		}
	}
	t.Logf("%d of 30 updates were handed to more than one poller", redelivered)
}

// TestCall: the answer's result is decoded; refusals are APIErrors with the
// right sentinel; a transport failure is ErrUnavailable; no error shows the
// token.
func TestCall(t *testing.T) {
	fake := faketelegram.New(testToken)
	st := openStore(t, "mem://")
	b := newBot(t, st, Config{APIURL: fake.URL + "/"}, &recorder{})
	ctx := context.Background()
	var me struct {
		ID       int64  `json:"id"`
		Username string `json:"username"`
	}
	if err := b.Call(ctx, "getMe", nil, &me); err != nil || me.ID != 4242 {
		t.Fatalf("getMe = %+v, %v", me, err)
	}
	if err := b.Call(ctx, "sendMessage", map[string]any{"chat_id": 7, "text": "hi"}, nil); err != nil {
		t.Fatal(err)
	}
	if s := fake.Calls("sendMessage"); len(s) != 1 || s[0].ChatID != 7 || s[0].Text != "hi" {
		t.Fatalf("recorded %+v", s)
	}
	for code, want := range map[int]error{400: botstate.ErrInvalidArgument, 409: botstate.ErrConflict, 429: botstate.ErrUnavailable, 502: botstate.ErrUnavailable} {
		fake.Fail("sendMessage", code)
		err := b.Call(ctx, "sendMessage", map[string]any{"chat_id": 7, "text": "hi"}, nil)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != code || !errors.Is(err, want) {
			t.Errorf("%d: %v, want an APIError wrapping %v", code, err, want)
		}
	}
	if err := b.Call(ctx, "noSuchMethod", nil, nil); err == nil {
		t.Error("an unknown method succeeded")
	}
	if err := b.Call(ctx, "a/b", nil, nil); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("a bad method name: %v", err)
	}
	if err := b.Call(ctx, "sendMessage", map[string]any{"x": make(chan int)}, nil); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("unencodable parameters: %v", err)
	}
	fake.Close()
	err := b.Call(ctx, "getMe", nil, nil)
	if !errors.Is(err, botstate.ErrUnavailable) || strings.Contains(err.Error(), "TEST-token") {
		t.Fatalf("server gone: %v", err)
	}
}
