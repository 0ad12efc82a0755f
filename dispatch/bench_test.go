package dispatch

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

// BenchmarkDispatch measures messages per second through the dispatcher
// with a no-op handler, each message on its own scope, against the bare
// sequence of store calls the dispatcher makes for such a message (Claim,
// Acquire, Complete, Handover), from the same number of goroutines, in the
// same run. The dispatcher has as many messages in flight as the bare
// sequence has goroutines. Run it with
//
//	go test -run '^$' -bench Dispatch -benchtime 20000x ./dispatch/
//
// (scripts/test.sh sets BOTSTATE_REDIS_URL for the Redis case).
func BenchmarkDispatch(b *testing.B) {
	urls := map[string]string{"mem": "mem://"}
	if u := os.Getenv("BOTSTATE_REDIS_URL"); u != "" {
		urls["redis"] = u
	}
	if u := os.Getenv("BOTSTATE_POSTGRES_URL"); u != "" {
		urls["postgres"] = u
	}
	for _, name := range []string{"mem", "redis", "postgres"} {
		url, ok := urls[name]
		if !ok {
			continue
		}
		workers := runtime.GOMAXPROCS(0) * 4
		if name != "mem" {
			workers = 64
		}
		b.Run(name+"/bare", func(b *testing.B) { benchBare(b, url, workers) })
		b.Run(name+"/dispatch", func(b *testing.B) { benchDispatch(b, url, workers) })
	}
}

func benchStore(b *testing.B, url string) *botstate.Store {
	st, err := botstate.Open(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st.Namespace(uniqueNS())
}

// spread runs fn(i) for i in [0, b.N) on workers goroutines.
func spread(b *testing.B, workers int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

func report(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

func benchBare(b *testing.B, url string, workers int) {
	st := benchStore(b, url)
	ev, lk := st.Events(), st.Locks()
	ctx := context.Background()
	pol := Policy{}.lockPolicy(DefaultLease + DefaultLease/2)
	b.ResetTimer()
	start := time.Now()
	spread(b, workers, func(i int) {
		key := "m" + strconv.Itoa(i)
		env := envelope{route: "r", scope: key, payload: []byte("payload")}
		c, err := ev.Claim(ctx, key, env.encode(), DefaultLease)
		if err != nil || c.Status != botstate.Claimed {
			b.Error(err, c.Status)
			return
		}
		e := entry{key: key, token: c.Token.ID, payload: []byte("payload")}
		r, err := lk.Acquire(ctx, lockKey("r", key), "owner", e.encode(), pol)
		if err != nil || r.Status != botstate.Acquired {
			b.Error(err, r.Status)
			return
		}
		if err := ev.Complete(ctx, c.Token, nil); err != nil {
			b.Error(err)
		}
		if _, err := lk.Handover(ctx, r.Lock, DefaultLease); err != nil {
			b.Error(err)
		}
	})
	report(b, start)
}

func benchDispatch(b *testing.B, url string, workers int) {
	st := benchStore(b, url)
	d, err := New(st, Config{RecoverEvery: -1})
	if err != nil {
		b.Fatal(err)
	}
	// As many messages in flight as the bare sequence has goroutines: a
	// producer waits for a free slot, a handler frees one.
	slots := make(chan struct{}, workers)
	var done sync.WaitGroup
	done.Add(b.N)
	if err := d.Handle("r", Route{Handler: func(context.Context, *Job) error {
		<-slots
		done.Done()
		return nil
	}}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	spread(b, workers, func(i int) {
		key := "m" + strconv.Itoa(i)
		slots <- struct{}{}
		if _, err := d.Dispatch(ctx, "r", Message{Key: key, Scope: key, Payload: []byte("payload")}); err != nil {
			b.Error(err)
		}
	})
	done.Wait()
	report(b, start)
	b.StopTimer()
	if err := d.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkHandoffFloor measures what the dispatcher's hand-off alone costs
// on this machine, with no store and no bookkeeping: producers give each
// message to an idle goroutine (or a new one), and a slot frees when it is
// "handled", as in BenchmarkDispatch. On mem, where a store call takes about
// half a microsecond, this floor bounds how close the dispatcher can come to
// the bare calls.
func BenchmarkHandoffFloor(b *testing.B) {
	workers := runtime.GOMAXPROCS(0) * 4
	tasks, stop := make(chan int), make(chan struct{})
	slots := make(chan struct{}, workers)
	var done, exited sync.WaitGroup
	done.Add(b.N)
	run := func(int) {
		defer exited.Done()
		idle := time.NewTimer(time.Second)
		defer idle.Stop()
		for {
			<-slots
			done.Done()
			select {
			case <-tasks:
			case <-idle.C:
				return
			case <-stop:
				return
			}
		}
	}
	b.ResetTimer()
	spread(b, workers, func(i int) {
		slots <- struct{}{}
		select {
		case tasks <- i:
		default:
			exited.Add(1)
			go run(i)
		}
	})
	done.Wait()
	close(stop)
	exited.Wait()
}
