package durabletest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

// Load is a few goroutines claiming and completing fresh keys of one
// namespace until halted. A key is acknowledged when its Complete returned
// nil; a Complete that failed leaves its outcome unknown. Failures must
// match ErrUnavailable (ErrNotOwner too for Complete: a claim the server
// lost), and each call must end by its deadline: anything else is a
// problem, which CheckProblems reports.
//
// The test marks the moment of its fault with Mark, halts the load with
// Halt, and then reads the keys back from a new Store or the same one.
type Load struct {
	ev       *botstate.Events
	prefix   string
	deadline time.Duration
	stop     chan struct{}
	wg       sync.WaitGroup
	seq      atomic.Int64

	markedAt     atomic.Int64 // UnixNano of mark, 0 before
	inFlight     atomic.Int64 // calls under way
	inFlightMark int64        // inFlight when marked
	before       atomic.Int64 // acknowledged before the mark
	failedBefore atomic.Int64 // calls failed before the mark
	failedAfter  atomic.Int64 // calls failed after the mark
	notOwner     atomic.Int64 // Completes refused with ErrNotOwner
	odd          atomic.Int64 // Claims of a fresh key that did not say Claimed
	firstOK      atomic.Int64 // ns from the mark to the first acknowledgement of a key claimed after it
	firstFail    atomic.Int64 // ns from the mark to the end of the first failed call
	lastFail     atomic.Int64 // ns from the mark to the end of the last failed call

	mu       sync.Mutex
	acked    []string // Complete returned nil
	unsure   []string // Complete failed: completed or not
	problems []string
}

// StartLoad starts workers goroutines on ev, each claiming a fresh key
// (prefix followed by a number) with the payload "payload-" plus the key,
// then completing it with the result "result-" plus the key; every call
// has deadline as its context deadline. A worker backs off 10 ms after a
// failure. The load runs until Halt.
func StartLoad(ev *botstate.Events, prefix string, workers int, deadline time.Duration) *Load {
	l := &Load{ev: ev, prefix: prefix, deadline: deadline, stop: make(chan struct{})}
	l.firstOK.Store(-1)
	l.firstFail.Store(-1)
	for range workers {
		l.wg.Add(1)
		go l.work()
	}
	return l
}

func (l *Load) work() {
	defer l.wg.Done()
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		key := l.prefix + strconv.FormatInt(l.seq.Add(1), 10)
		began := time.Now()
		var c botstate.Claim
		err := l.call("Claim", func(ctx context.Context) (err error) {
			c, err = l.ev.Claim(ctx, key, []byte("payload-"+key), time.Hour)
			return err
		})
		if err != nil {
			time.Sleep(10 * time.Millisecond) // a client backs off a little
			continue
		}
		if c.Status != botstate.Claimed {
			l.odd.Add(1)
			continue
		}
		err = l.call("Complete", func(ctx context.Context) error {
			return l.ev.Complete(ctx, c.Token, []byte("result-"+key))
		})
		l.mu.Lock()
		if err == nil {
			l.acked = append(l.acked, key)
		} else {
			l.unsure = append(l.unsure, key)
		}
		l.mu.Unlock()
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if m := l.markedAt.Load(); m == 0 {
			l.before.Add(1)
		} else if began.UnixNano() > m {
			l.firstOK.CompareAndSwap(-1, time.Now().UnixNano()-m)
		}
	}
}

// call runs one operation under the load's deadline and checks how it
// ended.
func (l *Load) call(op string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.deadline)
	defer cancel()
	l.inFlight.Add(1)
	start := time.Now()
	err := fn(ctx)
	took := time.Since(start)
	l.inFlight.Add(-1)
	if took > l.deadline+time.Second {
		l.problem("%s took %v, past its %v deadline (%v)", op, took, l.deadline, err)
	}
	if err == nil {
		return nil
	}
	if m := l.markedAt.Load(); m == 0 {
		l.failedBefore.Add(1)
	} else {
		l.failedAfter.Add(1)
		end := time.Now().UnixNano() - m
		l.firstFail.CompareAndSwap(-1, end)
		for old := l.lastFail.Load(); end > old && !l.lastFail.CompareAndSwap(old, end); old = l.lastFail.Load() {
		}
	}
	switch {
	case errors.Is(err, botstate.ErrUnavailable):
	case op == "Complete" && errors.Is(err, botstate.ErrNotOwner):
		l.notOwner.Add(1)
	default:
		l.problem("%s failed with %v, which matches neither ErrUnavailable nor, for Complete, ErrNotOwner", op, err)
	}
	return err
}

func (l *Load) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) < 20 {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

// WaitAcked waits until at least n keys are acknowledged and at least d
// went by; if n are not within 20 s, it halts the load and fails the test.
func (l *Load) WaitAcked(t testing.TB, n int, d time.Duration) {
	t.Helper()
	start := time.Now()
	for end := start.Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := l.Acked()
		if got >= n && time.Since(start) >= d {
			return
		}
		if time.Now().After(end) {
			l.Halt()
			t.Fatalf("only %d completions acknowledged in 20 s, want %d before the kill; problems: %v", got, n, l.problems)
		}
	}
}

// Mark notes the moment of the fault (call it just before) and the calls
// under way then. Failures and acknowledgements are counted from it.
func (l *Load) Mark() {
	l.inFlightMark = l.inFlight.Load()
	l.markedAt.Store(time.Now().UnixNano())
}

// Halt stops the workers and waits for them. It may be called more than
// once.
func (l *Load) Halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// Acked returns how many keys are acknowledged: their Complete returned
// nil.
func (l *Load) Acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// Unsure returns how many keys have a Complete that failed, so that whether
// they completed is unknown.
func (l *Load) Unsure() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.unsure)
}

// FailedAfterMark returns how many calls failed after Mark.
func (l *Load) FailedAfterMark() int64 { return l.failedAfter.Load() }

// FirstOK returns how long after Mark the first key claimed after it was
// acknowledged, or -1 while none has been.
func (l *Load) FirstOK() time.Duration { return time.Duration(l.firstOK.Load()) }

// Missing reads back every acknowledged key through ev and returns those
// that are not completed with their result, each with what was found,
// sorted. Call it after Halt.
func (l *Load) Missing(ev *botstate.Events) []string {
	var (
		missing []string
		mu      sync.Mutex
	)
	readBack(ev, l.acked, func(key string, e botstate.Event, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, botstate.ErrNotFound):
			missing = append(missing, key+": absent")
		case err != nil:
			missing = append(missing, key+": "+err.Error())
		case e.Status != botstate.EventCompleted || string(e.Result) != "result-"+key:
			missing = append(missing, fmt.Sprintf("%s: %s with result %q", key, e.Status, e.Result))
		}
	})
	slices.Sort(missing)
	return missing
}

// UnsureCompleted reads back through ev the keys whose Complete failed and
// counts those that are completed: the server did it, the answer was lost.
// Call it after Halt.
func (l *Load) UnsureCompleted(ev *botstate.Events) int {
	var n atomic.Int64
	readBack(ev, l.unsure, func(_ string, e botstate.Event, err error) {
		if err == nil && e.Status == botstate.EventCompleted {
			n.Add(1)
		}
	})
	return int(n.Load())
}

// readBack calls found with what Events.Get returns for each key, from a
// few goroutines.
func readBack(ev *botstate.Events, keys []string, found func(key string, e botstate.Event, err error)) {
	var wg sync.WaitGroup
	next := make(chan string)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range next {
				e, err := getEvent(ev, key)
				found(key, e, err)
			}
		}()
	}
	for _, key := range keys {
		next <- key
	}
	close(next)
	wg.Wait()
}

// getEvent is Events.Get, retried while the server answers ErrUnavailable
// (a restarted server loading its files, a cluster settling), for 10 s.
func getEvent(ev *botstate.Events, key string) (botstate.Event, error) {
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		e, err := ev.Get(ctx, key)
		cancel()
		if !errors.Is(err, botstate.ErrUnavailable) || time.Now().After(end) {
			return e, err
		}
	}
}

// Report logs what the load saw around the fault, named fault in the log
// ("SIGKILL", "kill").
func (l *Load) Report(t testing.TB, fault string) {
	t.Helper()
	t.Logf("%s: %d completions acknowledged (%d before the %s), %d calls under way at the %s, %d calls failed before it and %d after (from %v to %v after it), %d Completes refused with ErrNotOwner, %d Completes with an unknown outcome, %d fresh keys not Claimed",
		l.prefix, l.Acked(), l.before.Load(), fault, l.inFlightMark, fault, l.failedBefore.Load(), l.failedAfter.Load(),
		time.Duration(max(0, l.firstFail.Load())).Round(time.Millisecond), time.Duration(max(0, l.lastFail.Load())).Round(time.Millisecond),
		l.notOwner.Load(), l.Unsure(), l.odd.Load())
}

// CheckProblems fails the test with each problem the load saw: a call past
// its deadline, or a failure matching neither ErrUnavailable nor, for
// Complete, ErrNotOwner. Call it after Halt.
func (l *Load) CheckProblems(t testing.TB) {
	t.Helper()
	for _, p := range l.problems {
		t.Error(p)
	}
}
