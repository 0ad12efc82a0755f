package mem

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/botstate/botstate/driver"
)

func (d *Driver) countEvents() (n int) {
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		n += len(s.events)
		s.mu.Unlock()
	}
	return n
}

func TestSweepFreesExpiredItems(t *testing.T) {
	d := New(driver.Config{SweepInterval: time.Hour})
	defer d.Close()
	ctx, now := context.Background(), time.Now()
	for i := 0; i < 1000; i++ {
		k := strconv.Itoa(i)
		exp := now.Add(time.Minute)
		if i%2 == 0 {
			exp = now.Add(time.Hour)
		}
		if _, err := d.RecordEvent(ctx, "ns", driver.EventWrite{Key: k, Now: now, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.CacheSet(ctx, "ns", k, []byte("v"), now, exp, false); err != nil {
			t.Fatal(err)
		}
	}
	d.Sweep(now.Add(2 * time.Minute))
	if n := d.countEvents(); n != 500 {
		t.Fatalf("%d events after sweep, want the 500 that have not expired", n)
	}
	values := 0
	for i := range d.shards {
		values += len(d.shards[i].values)
	}
	if values != 500 {
		t.Fatalf("%d cache values after sweep, want 500", values)
	}
}

func TestSweeperRunsInBackgroundAndStopsOnClose(t *testing.T) {
	before := runtime.NumGoroutine()
	now := time.Now()
	clock := now
	d := New(driver.Config{SweepInterval: 5 * time.Millisecond, Clock: func() time.Time { return clock.Add(time.Hour) }})
	_, _ = d.RecordEvent(context.Background(), "ns", driver.EventWrite{Key: "k", Now: now, ExpiresAt: now.Add(time.Minute)})
	deadline := time.Now().Add(5 * time.Second)
	for d.countEvents() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the background sweeper never removed an expired event")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before Open", runtime.NumGoroutine(), before)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := d.RecordEvent(context.Background(), "ns", driver.EventWrite{Key: "k2", Now: now}); err != driver.ErrClosed {
		t.Fatalf("record after close: %v", err)
	}
}

func TestEventLimitBoundsMemory(t *testing.T) {
	d := New(driver.Config{})
	defer d.Close()
	ctx, now := context.Background(), time.Now()
	const limit = 1000
	for i := 0; i < 50*limit; i++ {
		k := strconv.Itoa(i)
		if _, err := d.RecordEvent(ctx, "ns", driver.EventWrite{Key: k, Now: now, Limit: limit}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 { // forgotten keys leave stale order entries behind
			_ = d.ForgetEvent(ctx, "ns", k)
		}
	}
	if n := d.countEvents(); n > limit {
		t.Fatalf("%d events stored, limit %d", n, limit)
	}
	o := d.order("ns")
	if len(o.ring) > 2*limit+1024 {
		t.Fatalf("order ring holds %d entries for a limit of %d", len(o.ring), limit)
	}
	if live := o.live.Load(); live != int64(d.countEvents()) {
		t.Fatalf("live counter %d, events %d", live, d.countEvents())
	}
}

func TestSweepDropsAbandonedLocks(t *testing.T) {
	d := New(driver.Config{SweepInterval: time.Hour})
	defer d.Close()
	ctx, now := context.Background(), time.Now()
	for i := 0; i < 100; i++ {
		_, err := d.Acquire(ctx, "ns", driver.AcquireRequest{Key: strconv.Itoa(i), Owner: "o", Strategy: driver.Reject,
			Now: now, ExpiresAt: now.Add(time.Minute), IdleExpiresAt: now.Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
	}
	d.Sweep(now.Add(30 * time.Second))
	locks := func() (n int) {
		for i := range d.shards {
			n += len(d.shards[i].locks)
		}
		return n
	}
	if n := locks(); n != 100 {
		t.Fatalf("%d lock records after a sweep while held, want 100", n)
	}
	d.Sweep(now.Add(2 * time.Minute))
	if n := locks(); n != 0 {
		t.Fatalf("%d lock records left after every holder lapsed", n)
	}
}
