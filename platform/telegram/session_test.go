package telegram

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/dispatch"
)

// deliver dispatches raw through the bot and fails the test when it is not
// accepted.
func deliver(t *testing.T, b *Bot, raw []byte) dispatch.Outcome {
	t.Helper()
	u, err := ParseUpdate(raw)
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.Dispatch(context.Background(), u)
	if err != nil {
		t.Fatalf("dispatch %d: %v", u.ID, err)
	}
	return out
}

func conv(t *testing.T, b *Bot, st *botstate.Store, chat, user int64) botstate.Conversation {
	t.Helper()
	key, err := b.ConversationKey(&Update{ChatID: chat, UserID: user})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Conversations().Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSessionSaved: what a handler changes is there for the next update of
// the conversation, and only for it; the reserved key is hidden.
func TestSessionSaved(t *testing.T) {
	st := openStore(t, "mem://")
	var mu sync.Mutex
	var seen []string
	rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%d state=%q data=%v hidden=%v", u.ID, s.State(), s.Data(), s.Get(AppliedKey)))
		mu.Unlock()
		switch u.Text {
		case "name":
			s.SetState("asked")
			s.Set("name", "Ada")
			s.Set("tmp", 1)
		case "age":
			s.Delete("tmp")
			s.Set("age", 36)
			s.SetState("done")
		case "reset":
			s.Clear()
			s.Set("after", true)
		}
		return nil
	}}
	b := newBot(t, st, Config{}, rec)
	wantKey, _ := b.ConversationKey(&Update{ChatID: 7, UserID: 7})
	deliver(t, b, msg(1, 7, 7, "name"))
	settled(t, st)
	deliver(t, b, msg(2, 7, 7, "age"))
	settled(t, st)
	deliver(t, b, msg(3, 8, 8, "other user"))
	settled(t, st)
	c := conv(t, b, st, 7, 7)
	if c.State != "done" || c.Data["name"] != "Ada" || count(c.Data["age"]) != 36 || c.Data["tmp"] != nil {
		t.Fatalf("stored %+v", c)
	}
	if got := appliedIDs(c.Data); !reflect.DeepEqual(got, []int64{1, 2}) {
		t.Fatalf("applied %v, want [1 2]", got)
	}
	deliver(t, b, msg(4, 7, 7, "reset"))
	settled(t, st)
	c = conv(t, b, st, 7, 7)
	if c.State != "" || len(c.Data) != 2 || c.Data["after"] != true {
		t.Fatalf("after Clear: %+v", c)
	}
	want := []string{
		`1 state="" data=map[] hidden=<nil>`,
		`2 state="asked" data=map[name:Ada tmp:1] hidden=<nil>`,
		`3 state="" data=map[] hidden=<nil>`,
		`4 state="done" data=map[age:36 name:Ada] hidden=<nil>`,
	}
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("handlers saw\n%q\nwant\n%q", seen, want)
	}
	if c.Key != wantKey {
		t.Fatalf("key %q, want %q", c.Key, wantKey)
	}
}

// TestSessionReplaysChanges: a writer that changes the conversation while
// the handler runs keeps its changes; the handler's are replayed on top,
// not its whole view written back.
func TestSessionReplaysChanges(t *testing.T) {
	st := openStore(t, "mem://")
	var b *Bot
	rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
		// Another writer (another scope of a GlobalUser conversation, an
		// admin tool) changes the conversation meanwhile.
		if _, err := st.Conversations().UpdateData(ctx, s.Key(), map[string]any{"other": "kept", "shared": "theirs"}); err != nil {
			return err
		}
		s.Set("mine", 1)
		s.Set("shared", "mine")
		s.Delete("gone")
		return nil
	}}
	b = newBot(t, st, Config{}, rec)
	key, _ := b.ConversationKey(&Update{ChatID: 7, UserID: 7})
	if _, err := st.Conversations().SetData(context.Background(), key, map[string]any{"gone": 1, "untouched": 2}); err != nil {
		t.Fatal(err)
	}
	deliver(t, b, msg(1, 7, 7, "x"))
	settled(t, st)
	c := conv(t, b, st, 7, 7)
	delete(c.Data, AppliedKey)
	want := map[string]any{"other": "kept", "shared": "mine", "mine": float64(1), "untouched": float64(2)}
	if !reflect.DeepEqual(c.Data, want) {
		t.Fatalf("stored %v, want %v", c.Data, want)
	}
}

// TestSessionConcurrentWriters: handlers of one GlobalUser conversation in
// different chats run at once (their scopes differ); each one's key
// survives the others' saves.
func TestSessionConcurrentWriters(t *testing.T) {
	st := openStore(t, "mem://")
	rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
		time.Sleep(5 * time.Millisecond)
		s.Set(fmt.Sprintf("chat%d", u.ChatID), u.ID)
		return nil
	}}
	b := newBot(t, st, Config{Strategy: botstate.GlobalUser}, rec)
	for i := int64(1); i <= 20; i++ {
		deliver(t, b, msg(i, 100+i, 7, "x"))
	}
	settled(t, st)
	c := conv(t, b, st, 0, 7)
	for i := int64(1); i <= 20; i++ {
		if count(c.Data[fmt.Sprintf("chat%d", 100+i)]) != i {
			t.Errorf("chat %d's key lost: %v", 100+i, c.Data)
		}
	}
	if got := len(appliedIDs(c.Data)); got != MaxApplied {
		t.Errorf("%d ids kept, want %d", got, MaxApplied)
	}
}

// TestSkipIfApplied: an update whose changes were saved by a run that did
// not complete (its process died between the save and the completion) is
// not applied again: its handler is skipped and the update completes.
func TestSkipIfApplied(t *testing.T) {
	st := openStore(t, "mem://")
	rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
		s.Set("count", count(s.Get("count"))+1)
		return nil
	}}
	b := newBot(t, st, Config{}, rec)
	ctx := context.Background()
	raw := msg(1, 7, 7, "x")
	// The run of a process that died after saving: the middleware ran,
	// the dispatcher never completed the event.
	if err := b.handle(ctx, &dispatch.Job{Message: dispatch.Message{Payload: raw}, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	// Its redelivery runs through the dispatcher.
	if out := deliver(t, b, raw); out != dispatch.Started {
		t.Fatalf("redelivery %v", out)
	}
	settled(t, st)
	if n := rec.count(); n != 1 {
		t.Fatalf("the handler ran %d times, want once", n)
	}
	key, _ := b.UpdateKey(1)
	if e, err := st.Events().Get(ctx, key); err != nil || e.Status != botstate.EventCompleted {
		t.Fatalf("event %+v (%v), want completed", e, err)
	}
	if c := conv(t, b, st, 7, 7); count(c.Data["count"]) != 1 {
		t.Fatalf("count %v, want 1", c.Data["count"])
	}
	// A later update applies as usual.
	deliver(t, b, msg(2, 7, 7, "x"))
	settled(t, st)
	if c := conv(t, b, st, 7, 7); count(c.Data["count"]) != 2 {
		t.Fatalf("count %v, want 2", c.Data["count"])
	}

	// The save itself checks too: a run whose handler started before the
	// other run saved does not save again.
	raw3 := msg(3, 7, 7, "x")
	job := &dispatch.Job{Message: dispatch.Message{Payload: raw3}, Attempt: 1}
	release := make(chan struct{})
	slow := newBot(t, st, Config{Route: "slow"}, &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
		<-release
		s.Set("count", count(s.Get("count"))+1)
		return nil
	}})
	done := make(chan error)
	go func() { done <- slow.handle(ctx, job) }()
	time.Sleep(20 * time.Millisecond) // slow has read the conversation
	if err := b.handle(ctx, job); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c := conv(t, b, st, 7, 7); count(c.Data["count"]) != 3 {
		t.Fatalf("count %v, want 3: update 3 applied twice or never", c.Data["count"])
	}
}

// TestSessionNotSaved: a failed handler saves nothing and its retry sees
// the conversation as before; the retry knows its attempt.
func TestSessionNotSaved(t *testing.T) {
	st := openStore(t, "mem://")
	var attempts []int
	var mu sync.Mutex
	rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
		mu.Lock()
		attempts = append(attempts, u.Attempt)
		mu.Unlock()
		if s.Get("x") != nil {
			return dispatch.Permanent(errors.New("saw the failed attempt's change"))
		}
		s.Set("x", u.Attempt)
		if u.Attempt == 1 {
			return errors.New("try again")
		}
		return nil
	}}
	b := newBot(t, st, Config{}, rec)
	deliver(t, b, msg(1, 7, 7, "x"))
	settled(t, st)
	if c := conv(t, b, st, 7, 7); count(c.Data["x"]) != 2 {
		t.Fatalf("stored %v, want x=2", c.Data)
	}
	if !reflect.DeepEqual(attempts, []int{1, 2}) {
		t.Fatalf("attempts %v", attempts)
	}
}

// TestSessionBadChanges: a handler that changes the reserved key or stores
// a value JSON cannot hold fails its update permanently, saving nothing.
func TestSessionBadChanges(t *testing.T) {
	for name, change := range map[string]func(*Session){
		"reserved key set":    func(s *Session) { s.Set(AppliedKey, []int{1}) },
		"reserved key delete": func(s *Session) { s.Delete(AppliedKey) },
		"a channel":           func(s *Session) { s.Set("c", make(chan int)) },
		"a function":          func(s *Session) { s.Set("f", func() {}) },
	} {
		t.Run(name, func(t *testing.T) {
			st := openStore(t, "mem://")
			rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
				s.Set("ok", true)
				change(s)
				return nil
			}}
			b := newBot(t, st, Config{}, rec)
			deliver(t, b, msg(1, 7, 7, "x"))
			key, _ := b.UpdateKey(1)
			eventually(t, "the update failed", func() bool {
				e, err := st.Events().Get(context.Background(), key)
				return err == nil && e.Status == botstate.EventFailed
			})
			if rec.count() != 1 {
				t.Fatalf("ran %d times, want once (no retry)", rec.count())
			}
			if c := conv(t, b, st, 7, 7); c.Exists() {
				t.Fatalf("saved %+v", c)
			}
		})
	}
}

// TestSessionWithoutConversation: an update without a chat or a user still
// reaches the handler, with a session that is not stored.
func TestSessionWithoutConversation(t *testing.T) {
	st := openStore(t, "mem://")
	var key string
	rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
		key = s.Key()
		s.Set("x", 1)
		return nil
	}}
	b := newBot(t, st, Config{}, rec)
	deliver(t, b, []byte(`{"update_id":5,"poll":{"id":"p","question":"?"}}`))
	settled(t, st)
	if rec.count() != 1 || key != "" {
		t.Fatalf("ran %d times with key %q", rec.count(), key)
	}
}

// TestSkippedUpdates: under Debounce, the handler of the latest update is
// told which earlier ones it replaced, parsed.
func TestSkippedUpdates(t *testing.T) {
	st := openStore(t, "mem://")
	rec := &recorder{}
	b := newBot(t, st, Config{Policy: dispatch.Policy{Mode: dispatch.Debounce, Quiet: 200 * time.Millisecond}}, rec)
	for id := int64(1); id <= 3; id++ {
		deliver(t, b, msg(id, 7, 7, fmt.Sprint("m", id)))
	}
	settled(t, st)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.runs) != 1 || rec.runs[0].ID != 3 {
		t.Fatalf("runs %v, want update 3 alone", rec.runs)
	}
	var skipped []string
	for _, s := range rec.runs[0].Skipped {
		skipped = append(skipped, fmt.Sprintf("%d:%s", s.ID, s.Text))
	}
	if !reflect.DeepEqual(skipped, []string{"1:m1", "2:m2"}) {
		t.Fatalf("skipped %v", skipped)
	}
}

func TestNewSession(t *testing.T) {
	s := NewSession(botstate.Conversation{Key: "k", State: "a", Data: map[string]any{"x": 1.0, AppliedKey: []any{1.0}}})
	if s.Key() != "k" || s.State() != "a" || s.Get("x") != 1.0 || s.Get(AppliedKey) != nil || s.Changed() {
		t.Fatalf("%+v", s)
	}
	d := s.Data()
	d["y"] = 2
	if s.Get("y") != nil {
		t.Fatal("Data is not a copy")
	}
	s.Set("z", 3)
	if !s.Changed() {
		t.Fatal("not changed")
	}
}
