package mem_test

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
	"github.com/botstate/botstate/statetest"
)

// The SPEC's target: Record and Claim on mem within 3x a bare
// sync.Map.LoadOrStore measured in the same run, flat from 10 k to 10 M
// keys. Run:
//
//	go test -run '^$' -bench . -benchmem ./backend/mem
//	BOTSTATE_BENCH_10M=1 go test -run '^$' -bench Scale -benchmem -timeout 30m ./backend/mem

var payload = []byte(`{"type":"message"}`)

func keys(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

func benchStore(b *testing.B) *botstate.Store {
	st, err := botstate.Open(context.Background(), "mem://")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// parallel runs op over fresh keys from every goroutine, as a bot's
// handlers would.
func parallel(b *testing.B, op func(key string)) {
	ks := keys(b.N, "T024BE7LD:Ev0PV52K")
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			op(ks[next.Add(1)-1])
		}
	})
}

func BenchmarkInsert(b *testing.B) {
	ctx := context.Background()
	b.Run("baseline=sync.Map.LoadOrStore", func(b *testing.B) {
		var m sync.Map
		parallel(b, func(k string) { m.LoadOrStore(k, payload) })
	})
	b.Run("Record", func(b *testing.B) {
		ev := benchStore(b).Events()
		parallel(b, func(k string) {
			if _, err := ev.Record(ctx, k, payload); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("Claim", func(b *testing.B) {
		ev := benchStore(b).Events()
		parallel(b, func(k string) {
			if _, err := ev.Claim(ctx, k, payload, time.Minute); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// BenchmarkDuplicate measures the path every retry takes: the key exists.
func BenchmarkDuplicate(b *testing.B) {
	ctx := context.Background()
	const n = 1 << 16
	ks := keys(n, "T024BE7LD:Ev0PV52K")
	run := func(b *testing.B, op func(string)) {
		var i atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				op(ks[(i.Add(1)-1)&(n-1)])
			}
		})
	}
	b.Run("baseline=sync.Map.LoadOrStore", func(b *testing.B) {
		var m sync.Map
		for _, k := range ks {
			m.Store(k, payload)
		}
		run(b, func(k string) { m.LoadOrStore(k, payload) })
	})
	b.Run("Record", func(b *testing.B) {
		ev := benchStore(b).Events()
		for _, k := range ks {
			_, _ = ev.Record(ctx, k, payload)
		}
		run(b, func(k string) { _, _ = ev.Record(ctx, k, payload) })
	})
	b.Run("Claim", func(b *testing.B) {
		ev := benchStore(b).Events()
		for _, k := range ks {
			_, _ = ev.Claim(ctx, k, payload, time.Minute)
		}
		run(b, func(k string) { _, _ = ev.Claim(ctx, k, payload, time.Minute) })
	})
}

// BenchmarkScale measures Record of new keys into a store that already
// holds 10 k or (with BOTSTATE_BENCH_10M=1) 10 M keys, and reports the
// heap bytes each remembered key costs.
func BenchmarkScale(b *testing.B) {
	ctx := context.Background()
	sizes := []int{10_000}
	if os.Getenv("BOTSTATE_BENCH_10M") == "1" {
		sizes = append(sizes, 10_000_000)
	}
	for _, size := range sizes {
		b.Run("keys="+strconv.Itoa(size), func(b *testing.B) {
			st := benchStore(b)
			ev := st.Events()
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for i := 0; i < size; i++ {
				if _, err := ev.Record(ctx, "T024BE7LD:Ev0PV52K"+strconv.Itoa(i), payload); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			perKey := float64(after.HeapAlloc-before.HeapAlloc) / float64(size)
			ks := keys(b.N, "new:")
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, _ = ev.Record(ctx, ks[next.Add(1)-1], payload)
				}
			})
			b.StopTimer()
			b.ReportMetric(perKey, "bytes/key")
			runtime.KeepAlive(st)
		})
	}
}

// BenchmarkListings: the recovery listings with no completed events held,
// and with a million (statetest.BenchmarkListings).
func BenchmarkListings(b *testing.B) {
	st, err := botstate.Open(context.Background(), "mem://")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	statetest.BenchmarkListings(b, st)
}

// BenchmarkSnapshotMemory: export and migrate of a million items, peak heap
// above the items themselves (statetest.BenchmarkSnapshotMemory).
func BenchmarkSnapshotMemory(b *testing.B) {
	open := func() *botstate.Store {
		st, err := botstate.Open(context.Background(), "mem://")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	statetest.BenchmarkSnapshotMemory(b, open(), open(), 1_000_000)
}

// BenchmarkBrowse: a dashboard page of conversations and of locks at the
// start and the end of 100 k of each (statetest.BenchmarkBrowse).
func BenchmarkBrowse(b *testing.B) {
	st, err := botstate.Open(context.Background(), "mem://")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	statetest.BenchmarkBrowse(b, st, 100_000)
}
