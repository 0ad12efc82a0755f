// Command quickstart walks through every domain of botstate on one store:
// a Slack event handled once despite a retry, a two-step form, a followed
// thread with memory, a per-thread lock with a queue, an alert manager's
// issue moved between channels, and a snapshot of it all.
//
//	go run ./examples/quickstart            # in memory
//	go run ./examples/quickstart mem://     # the same, by URL
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
)

func main() {
	url := "mem://"
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := botstate.Open(ctx, url)
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	bot := st.Namespace("quickstart")
	if err := run(ctx, bot); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, bot *botstate.Store) error {
	// 1. Events: Slack delivers the same event twice; the handler runs once.
	key, err := botstate.SlackEventKey("T024BE7LD", "Ev0PV52K21")
	if err != nil {
		return err
	}
	for delivery := 1; delivery <= 2; delivery++ {
		c, err := bot.Events().Claim(ctx, key, []byte(`{"type":"app_mention","text":"hi"}`), time.Minute)
		if err != nil {
			return err
		}
		switch c.Status {
		case botstate.Claimed:
			if err := bot.Events().Complete(ctx, c.Token, []byte("replied in thread")); err != nil {
				return err
			}
			fmt.Printf("events:        delivery %d handled\n", delivery)
		default:
			fmt.Printf("events:        delivery %d skipped (%s: %s)\n", delivery, c.Status, c.Result)
		}
	}

	// 2. Conversations: a form with a flow and data merged on the server.
	form := &botstate.Flow{Name: "signup", Initial: "name", Transitions: map[string][]string{"name": {"email"}, "email": {"done"}}}
	ck, err := botstate.ConversationKey(botstate.UserInChat, botstate.ConversationRef{BotID: "B1", ChatID: "C024BE91L", UserID: "U1"})
	if err != nil {
		return err
	}
	if _, err := bot.Conversations().Start(ctx, ck, form); err != nil {
		return err
	}
	if _, err := bot.Conversations().UpdateData(ctx, ck, map[string]any{"name": "Ada"}); err != nil {
		return err
	}
	conv, err := bot.Conversations().Transition(ctx, ck, form, "email")
	if err != nil {
		return err
	}
	fmt.Printf("conversations: %s/%s data=%v version=%d\n", conv.Flow, conv.State, conv.Data, conv.Version)

	// 3. Threads: follow the thread we answered in, remember its topic.
	thread := "C024BE91L:1700000000.000100"
	if err := bot.Threads().Subscribe(ctx, thread, 30*time.Minute); err != nil {
		return err
	}
	mem, err := bot.ThreadState().Merge(ctx, thread, map[string]any{"topic": "onboarding"}, time.Hour)
	if err != nil {
		return err
	}
	followed, err := bot.Threads().IsSubscribed(ctx, thread)
	if err != nil {
		return err
	}
	if !followed {
		return fmt.Errorf("the thread is not followed after Subscribe")
	}
	fmt.Printf("threads:       following the thread, which remembers %v\n", mem)

	// 4. Locks: one handler per thread; a message that arrives meanwhile waits.
	policy := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute, QueueMax: 10}
	first, err := bot.Locks().Acquire(ctx, thread, "replica-a", []byte("first message"), policy)
	if err != nil {
		return err
	}
	second, err := bot.Locks().Acquire(ctx, thread, "replica-b", []byte("second message"), policy)
	if err != nil {
		return err
	}
	fmt.Printf("locks:         replica-a %s the thread; replica-b's message %s behind it\n", first.Status, second.Status)
	for lk := first.Lock; ; {
		h, err := bot.Locks().Handover(ctx, lk, time.Minute)
		if err != nil {
			return err
		}
		if !h.Held {
			fmt.Println("locks:         nothing left waiting: replica-a released the thread")
			break
		}
		fmt.Printf("locks:         replica-a took over the queued %q\n", h.Next.Payload)
		lk = h.Lock
	}

	// 5. Incidents: an issue found by correlation id, moved to another channel.
	in := bot.Incidents()
	if err := in.SaveIssue(ctx, &issue{Channel: "C-ops", ID: "iss-1", Corr: "disk-full:db1", Open: true}); err != nil {
		return err
	}
	if err := in.MoveIssue(ctx, &issue{Channel: "C-db", ID: "iss-1", Corr: "disk-full:db1", Open: true}, "C-ops", "C-db"); err != nil {
		return err
	}
	active, err := in.FindActiveChannels(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("incidents:     active channels %v\n", active)

	// 6. Snapshot: everything above, as canonical NDJSON (botstate export
	// writes the same lines); here, counted by kind.
	var buf bytes.Buffer
	n, err := bot.Export(ctx, &buf)
	if err != nil {
		return err
	}
	kinds := map[string]int{}
	lines := bufio.NewScanner(&buf)
	lines.Scan() // the header
	for lines.Scan() {
		var item struct{ Kind string }
		if err := json.Unmarshal(lines.Bytes(), &item); err != nil {
			return err
		}
		kinds[item.Kind]++
	}
	fmt.Printf("snapshot:      %d items: %v\n", n, kinds)
	fmt.Println("               (the released lock's record stays a minute, keeping its fencing token)")
	return nil
}

type issue struct {
	Channel, ID, Corr string
	Open              bool
}

func (i *issue) ChannelID() string            { return i.Channel }
func (i *issue) UniqueID() string             { return i.ID }
func (i *issue) GetCorrelationID() string     { return i.Corr }
func (i *issue) IsOpen() bool                 { return i.Open }
func (i *issue) CurrentPostID() string        { return "" }
func (i *issue) MarshalJSON() ([]byte, error) { return json.Marshal(*i) }
