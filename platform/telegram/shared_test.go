package telegram

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/dispatch"
	"github.com/botstate/botstate/statetest"
)

// TestSharedBackend runs three replicas, each with its own connection to a
// real shared store, and delivers every update to two or three of their
// webhooks at once: each update is handled once, one at a time per chat,
// and every conversation counts each of its updates once. Then an update
// whose changes a dead replica saved is redelivered and not applied again.
func TestSharedBackend(t *testing.T) {
	for _, b := range []struct{ name, env string }{{"redis", "BOTSTATE_REDIS_URL"}, {"postgres", "BOTSTATE_POSTGRES_URL"}} {
		t.Run(b.name, func(t *testing.T) {
			url := statetest.BackendURL(t, b.env)
			ns := uniqueNS()
			var mu sync.Mutex
			running := map[int64]bool{} // chats with a handler running
			overlaps := 0
			rec := &recorder{fn: func(ctx context.Context, u *Update, s *Session) error {
				mu.Lock()
				if running[u.ChatID] {
					overlaps++
				}
				running[u.ChatID] = true
				mu.Unlock()
				time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
				s.Set("n", count(s.Get("n"))+1)
				mu.Lock()
				running[u.ChatID] = false
				mu.Unlock()
				return nil
			}}
			var bots []*Bot
			var stores []*botstate.Store
			for range 3 {
				root, err := botstate.Open(context.Background(), url)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { root.Close() })
				st := root.Namespace(ns)
				stores = append(stores, st)
				bots = append(bots, newBot(t, st, Config{SecretToken: testSecret}, rec))
			}
			const chats, per = 4, 15
			var wg sync.WaitGroup
			for c := int64(1); c <= chats; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := int64(0); i < per; i++ {
						raw := msg(c*1000+i, c, c, "x")
						var dwg sync.WaitGroup
						for _, k := range rand.Perm(3)[:2+rand.IntN(2)] {
							dwg.Add(1)
							go func() {
								defer dwg.Done()
								if code, body := post(t, bots[k], http.MethodPost, testSecret, bytes.NewReader(raw), -1); code != http.StatusOK {
									t.Errorf("bot %d: %d %s", k, code, body)
								}
							}()
						}
						dwg.Wait()
					}
				}()
			}
			wg.Wait()
			settled(t, stores[0])
			if n := rec.count(); n != chats*per {
				t.Errorf("%d runs for %d updates", n, chats*per)
			}
			if overlaps > 0 {
				t.Errorf("%d handlers started while another of their chat ran", overlaps)
			}
			for c := int64(1); c <= chats; c++ {
				if got := count(conv(t, bots[0], stores[0], c, c).Data["n"]); got != per {
					t.Errorf("chat %d counted %d, want %d", c, got, per)
				}
			}

			// A replica that saved update 9999 and died before completing it.
			raw := msg(9999, 1, 1, "x")
			if err := bots[1].handle(context.Background(), &dispatch.Job{Message: dispatch.Message{Payload: raw}, Attempt: 1}); err != nil {
				t.Fatal(err)
			}
			deliver(t, bots[2], raw)
			settled(t, stores[0])
			if got := count(conv(t, bots[0], stores[0], 1, 1).Data["n"]); got != per+1 {
				t.Errorf("after the redelivery of a saved update, chat 1 counted %d, want %d", got, per+1)
			}
		})
	}
}
