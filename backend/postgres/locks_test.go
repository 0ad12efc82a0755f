package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	_ "github.com/botstate/botstate/backend/mem" // the reference the test compares against
	"github.com/botstate/botstate/driver"
)

// TestLocksMatchMemory runs the same random lock operations, at the same
// times, on this backend and on the in-memory one, and compares every reply
// and every lock as InspectLock and LapsedLocks return it. The operations
// mix every strategy, queue bounds, entries equal in every field (the
// stored entry rows are matched by value), holders lapsing with and without
// their entry, Abandon and Next, so the rows this backend writes back after
// each rule (entries put back in front, skipped entries trimmed) are
// checked against the rules themselves.
func TestLocksMatchMemory(t *testing.T) {
	ctx := context.Background()
	pg, mem, clock := pgAndMem(t)
	ns := fmt.Sprintf("locks-%d", time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	keys := []string{"k1", "k2", "k3"}
	payloads := [][]byte{nil, []byte("a"), []byte("b"), []byte("c")}
	pick := func(n int) int { return rng.IntN(n) }

	for step := range 1500 {
		now := clock.Now()
		key := keys[pick(len(keys))]
		st, _, err := mem.InspectLock(ctx, ns, key, now)
		if err != nil {
			t.Fatal(err)
		}
		token := uint64(1)
		if len(st.Holders) > 0 && pick(6) > 0 {
			token = st.Holders[pick(len(st.Holders))].Token
		}
		idle := now.Add(time.Minute)
		ttl := time.Duration(1+pick(4)) * 30 * time.Second
		var name string
		var run func(d driver.Driver) (any, error)
		switch op := pick(10); {
		case op < 5:
			r := driver.AcquireRequest{
				Key: key, Owner: fmt.Sprintf("w%d", pick(3)), Strategy: driver.Strategy(1 + pick(4)),
				Entry: payloads[pick(len(payloads))], Now: now, ExpiresAt: now.Add(ttl),
				EntryExpiresAt: now.Add(time.Duration(1+pick(6)) * 20 * time.Second),
				QueueMax:       pick(4), DropNewest: pick(2) == 0, MaxHolders: pick(3),
				IdleExpiresAt: idle, NoEntry: pick(5) == 0, QueueWhenFull: pick(2) == 0,
			}
			name = fmt.Sprintf("Acquire %+v", r)
			run = func(d driver.Driver) (any, error) { return d.Acquire(ctx, ns, r) }
		case op == 5:
			name = fmt.Sprintf("ExtendLock %s %d", key, token)
			run = func(d driver.Driver) (any, error) { return d.ExtendLock(ctx, ns, key, token, now, now.Add(ttl)) }
		case op == 6:
			keep := pick(2) == 0
			name = fmt.Sprintf("ReleaseLock %s %d keep=%v", key, token, keep)
			run = func(d driver.Driver) (any, error) { return d.ReleaseLock(ctx, ns, key, token, now, idle, keep) }
		case op == 7:
			keep := pick(2) == 0
			name = fmt.Sprintf("HandoverLock %s %d keep=%v", key, token, keep)
			run = func(d driver.Driver) (any, error) {
				return d.HandoverLock(ctx, ns, key, token, now, now.Add(ttl), idle, keep)
			}
		case op == 8 && pick(4) == 0:
			name = "ForceReleaseLock " + key
			run = func(d driver.Driver) (any, error) { return d.ForceReleaseLock(ctx, ns, key, now, idle) }
		default:
			name = "advance"
			clock.Advance(time.Duration(pick(60)) * time.Second)
		}
		compareRun(t, step, name, run, pg, mem)
		now = clock.Now()
		for _, k := range keys {
			want, wantOK, err1 := mem.InspectLock(ctx, ns, k, now)
			got, gotOK, err2 := pg.InspectLock(ctx, ns, k, now)
			if err1 != nil || err2 != nil || gotOK != wantOK || canonicalJSON(t, got) != canonicalJSON(t, want) {
				t.Fatalf("step %d, after %s, InspectLock %s:\npostgres %v %s %v\nmem      %v %s %v",
					step, name, k, gotOK, canonicalJSON(t, got), err2, wantOK, canonicalJSON(t, want), err1)
			}
		}
		want, err1 := mem.LapsedLocks(ctx, ns, now, 2)
		got, err2 := pg.LapsedLocks(ctx, ns, now, 2)
		if err1 != nil || err2 != nil || canonicalJSON(t, got) != canonicalJSON(t, want) {
			t.Fatalf("step %d, after %s, LapsedLocks:\npostgres %s %v\nmem      %s %v", step, name, canonicalJSON(t, got), err2, canonicalJSON(t, want), err1)
		}
	}
}

// canonicalJSON encodes v with empty slices and nil ones alike, so that two
// backends that differ only there compare equal.
func canonicalJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var x any
	if err := json.Unmarshal(b, &x); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(dropEmpty(x))
	return string(b)
}

func dropEmpty(x any) any {
	switch v := x.(type) {
	case []any:
		if len(v) == 0 {
			return nil
		}
		for i := range v {
			v[i] = dropEmpty(v[i])
		}
	case map[string]any:
		for k, e := range v {
			if e = dropEmpty(e); e == nil || e == "" {
				delete(v, k)
			} else {
				v[k] = e
			}
		}
	}
	return x
}
