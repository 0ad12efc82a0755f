package dispatch_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
	"github.com/botstate/botstate/dispatch"
)

// A bot answers each message of a thread once, one at a time per thread;
// the messages that arrive meanwhile wait in order.
func Example() {
	ctx := context.Background()
	st, _ := botstate.Open(ctx, "mem://")
	defer st.Close()
	d, _ := dispatch.New(st.Namespace("my-bot"), dispatch.Config{})

	done := make(chan string, 3)
	_ = d.Handle("reply", dispatch.Route{
		Policy: dispatch.Policy{Mode: dispatch.Queue, QueueMax: 50},
		Handler: func(ctx context.Context, job *dispatch.Job) error {
			// Post the answer here; ctx ends if this replica loses the thread.
			done <- strings.ToUpper(string(job.Payload))
			return nil
		},
	})
	for i, text := range []string{"hello", "are you there?", "hello"} {
		// A Slack event id, say: the third delivery is a retry of the first.
		key := fmt.Sprintf("evt-%d", i%2)
		out, _ := d.Dispatch(ctx, "reply", dispatch.Message{Key: key, Scope: "thread-1", Payload: []byte(text)})
		if out == dispatch.Duplicate {
			fmt.Println("retry ignored:", key)
		}
	}
	fmt.Println(<-done)
	fmt.Println(<-done)
	_ = d.Close(ctx)
	// Output:
	// retry ignored: evt-0
	// HELLO
	// ARE YOU THERE?
}

// Debounce: an agent answers only once the user stopped typing, and sees
// what it skipped.
func ExamplePolicy_debounce() {
	ctx := context.Background()
	st, _ := botstate.Open(ctx, "mem://")
	defer st.Close()
	d, _ := dispatch.New(st, dispatch.Config{})
	done := make(chan string, 1)
	_ = d.Handle("agent", dispatch.Route{
		Policy: dispatch.Policy{Mode: dispatch.Debounce, Quiet: 200 * time.Millisecond},
		Handler: func(ctx context.Context, job *dispatch.Job) error {
			var earlier []string
			for _, m := range job.Skipped {
				earlier = append(earlier, string(m.Payload))
			}
			done <- fmt.Sprintf("answer to %q, after %q", job.Payload, earlier)
			return nil
		},
	})
	for i, text := range []string{"so", "I was thinking", "what is 2+2?"} {
		_, _ = d.Dispatch(ctx, "agent", dispatch.Message{Key: fmt.Sprint(i), Scope: "dm-7", Payload: []byte(text)})
	}
	fmt.Println(<-done)
	_ = d.Close(ctx)
	// Output:
	// answer to "what is 2+2?", after ["so" "I was thinking"]
}
