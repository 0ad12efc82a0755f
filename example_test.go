package botstate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
)

// A Slack Events API handler that runs each event once, even when Slack
// retries it or several replicas receive it.
func ExampleEvents_Claim() {
	ctx := context.Background()
	st, _ := botstate.Open(ctx, "mem://")
	defer st.Close()
	events := st.Namespace("acme").Events()

	key, _ := botstate.SlackEventKey("T024BE7LD", "Ev0PV52K21")
	for delivery := 1; delivery <= 2; delivery++ {
		c, err := events.Claim(ctx, key, []byte(`{"type":"app_mention"}`), time.Minute)
		if err != nil {
			panic(err)
		}
		switch c.Status {
		case botstate.Claimed:
			// ... run the handler, then store what it produced.
			_ = events.Complete(ctx, c.Token, []byte("replied"))
			fmt.Println("delivery", delivery, "handled")
		case botstate.InProgress:
			fmt.Println("delivery", delivery, "is being handled elsewhere")
		case botstate.Completed:
			fmt.Println("delivery", delivery, "already handled:", string(c.Result))
		}
	}
	// Output:
	// delivery 1 handled
	// delivery 2 already handled: replied
}

// One-shot deduplication, as SET NX does it.
func ExampleEvents_Record() {
	ctx := context.Background()
	st, _ := botstate.Open(ctx, "mem://")
	defer st.Close()
	key, _ := botstate.SocketModeKey("a4f1b2c3-envelope")
	for i := 0; i < 2; i++ {
		r, _ := st.Events().Record(ctx, key, nil)
		fmt.Println(r)
	}
	// Output:
	// new
	// duplicate
}

// A form that asks for a name, then an age, keeping answers in the
// conversation's data.
func ExampleConversations() {
	ctx := context.Background()
	st, _ := botstate.Open(ctx, "mem://", botstate.WithConversationTTL(24*time.Hour))
	defer st.Close()
	convs := st.Conversations()
	signup := &botstate.Flow{Name: "signup", Initial: "name", Transitions: map[string][]string{
		"name": {"age"}, "age": {"done"},
	}}
	key, _ := botstate.ConversationKey(botstate.UserInChat, botstate.ConversationRef{BotID: "42", ChatID: "-100123", UserID: "7"})

	_, _ = convs.Start(ctx, key, signup)
	_, _ = convs.UpdateData(ctx, key, map[string]any{"name": "Ada"})
	_, _ = convs.Transition(ctx, key, signup, "age")
	c, _ := convs.UpdateData(ctx, key, map[string]any{"age": 36})
	fmt.Println(c.State, c.Data["name"], c.Data["age"])

	_, err := convs.Transition(ctx, key, signup, "name")
	fmt.Println(err != nil)
	// Output:
	// age Ada 36
	// true
}

// Following threads and keeping memory per thread and per channel.
func ExampleThreads() {
	ctx := context.Background()
	st, _ := botstate.Open(ctx, "mem://")
	defer st.Close()
	_ = st.Threads().Subscribe(ctx, "C024BE91L:1700000000.000100", 30*time.Minute)
	followed, _ := st.Threads().IsSubscribed(ctx, "C024BE91L:1700000000.000100")
	fmt.Println("following:", followed)

	m, _ := st.ThreadState().Merge(ctx, "C024BE91L:1700000000.000100", map[string]any{"topic": "billing"}, time.Hour)
	fmt.Println("topic:", m["topic"])

	for i := 1; i <= 4; i++ {
		_, _ = st.Cache().Append(ctx, "history:C024BE91L", []byte(fmt.Sprintf("message %d", i)), 3, time.Hour)
	}
	h, _ := st.Cache().List(ctx, "history:C024BE91L")
	fmt.Printf("%s\n", h)
	// Output:
	// following: true
	// topic: billing
	// [message 2 message 3 message 4]
}

// One handler per thread: messages that arrive meanwhile wait in a queue,
// and Handover passes them on without ever stranding one.
func ExampleLocks_Handover() {
	ctx := context.Background()
	st, _ := botstate.Open(ctx, "mem://")
	defer st.Close()
	locks := st.Locks()
	policy := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute, QueueMax: 10}

	r, _ := locks.Acquire(ctx, "thread:1", "replica-a", []byte("hello"), policy)
	q, _ := locks.Acquire(ctx, "thread:1", "replica-b", []byte("are you there?"), policy)
	fmt.Println(r.Status == botstate.Acquired, q.Status == botstate.Queued)

	lk := r.Lock
	for {
		h, _ := locks.Handover(ctx, lk, time.Minute)
		if !h.Held {
			break
		}
		fmt.Println("next:", string(h.Next.Payload))
		lk = h.Lock
	}
	// Output:
	// true true
	// next: are you there?
}

type alertIssue struct {
	Channel, ID, Corr string
	Open              bool
}

func (i *alertIssue) ChannelID() string            { return i.Channel }
func (i *alertIssue) UniqueID() string             { return i.ID }
func (i *alertIssue) GetCorrelationID() string     { return i.Corr }
func (i *alertIssue) IsOpen() bool                 { return i.Open }
func (i *alertIssue) CurrentPostID() string        { return "" }
func (i *alertIssue) MarshalJSON() ([]byte, error) { return json.Marshal(*i) }

// The alert manager's store: issues found by correlation id, moved between
// channels atomically.
func ExampleIncidents() {
	ctx := context.Background()
	st, _ := botstate.Open(ctx, "mem://")
	defer st.Close()
	in := st.Incidents()
	_ = in.SaveIssue(ctx, &alertIssue{Channel: "C-ops", ID: "iss-1", Corr: "disk-full:db1", Open: true})
	id, _, _ := in.FindOpenIssueByCorrelationID(ctx, "C-ops", "disk-full:db1")
	fmt.Println("found:", id)
	_ = in.MoveIssue(ctx, &alertIssue{Channel: "C-db", ID: "iss-1", Corr: "disk-full:db1", Open: true}, "C-ops", "C-db")
	chans, _ := in.FindActiveChannels(ctx)
	fmt.Println("active:", chans)
	// Output:
	// found: iss-1
	// active: [C-db]
}

// Moving state between backends: export from one, import into another.
func ExampleStore_Export() {
	ctx := context.Background()
	from, _ := botstate.Open(ctx, "mem://")
	defer from.Close()
	_ = from.Cache().Set(ctx, "greeting", []byte("hi"), 0)
	var snap strings.Builder
	n, _ := from.Export(ctx, &snap)
	fmt.Println("exported", n)

	to, _ := botstate.Open(ctx, "mem://")
	defer to.Close()
	_, _ = to.Import(ctx, strings.NewReader(snap.String()))
	v, _, _ := to.Cache().Get(ctx, "greeting")
	fmt.Println(string(v))
	_, _ = to.Export(ctx, os.Stdout)
	// Output:
	// exported 1
	// hi
	// {"format":"botstate-snapshot","version":1}
	// {"kind":"cache_value","ns":"default","key":"greeting","payload":"aGk="}
}
