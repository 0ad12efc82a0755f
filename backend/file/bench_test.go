package file

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/statetest"
)

// Group commit, measured. Each operation is a Claim then a Complete of a
// fresh event key (two write transactions' worth of work), on a durable
// file (fsync on) in the benchmark's temporary directory, by 1 or 64
// concurrent writers, committed three ways in the same run:
//
//   - group: this backend (a committer applies every waiting write in one
//     transaction, no delay);
//   - dbbatch: bbolt's DB.Batch (gathers writes for up to 10 ms);
//   - baseline=update-per-op: one DB.Update, so one commit, per write.
//
// commits/op is write transactions committed per operation: bbolt numbers
// each committed write transaction (a read transaction's ID is that of the
// last commit), so the count is the difference of IDs before and after.
// bbolt fsyncs twice per commit (fdatasync of the data pages, then of the
// meta page), so fdatasyncs/op is twice commits/op; strace -c -e fdatasync
// agrees with it. Run:
//
//	go test -run '^$' -bench ClaimComplete -benchtime 3s ./backend/file
func BenchmarkClaimComplete(b *testing.B) {
	for _, c := range []struct {
		name    string
		mode    commitMode
		writers int
	}{
		{"group/writers=1", commitGroup, 1},
		{"group/writers=64", commitGroup, 64},
		{"dbbatch/writers=1", commitBatch, 1},
		{"dbbatch/writers=64", commitBatch, 64},
		{"baseline=update-per-op/writers=1", commitSolo, 1},
		{"baseline=update-per-op/writers=64", commitSolo, 64},
	} {
		b.Run(c.name, func(b *testing.B) { benchClaimComplete(b, c.mode, c.writers) })
	}
}

func benchClaimComplete(b *testing.B, mode commitMode, writers int) {
	ctx := context.Background()
	d, err := open(options{path: filepath.Join(b.TempDir(), "bench.db"), timeout: time.Second, mode: mode},
		driver.Config{SweepInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	keys := make([]string, b.N)
	for i := range keys {
		keys[i] = "T024BE7LD:Ev0PV52K" + strconv.Itoa(i)
	}
	payload := []byte(`{"type":"message","text":"hello"}`)
	var next atomic.Int64
	var failed atomic.Value
	start := lastCommit(b, d)
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				now := time.Now().UTC().Truncate(time.Microsecond)
				k := keys[i]
				rep, err := d.ClaimEvent(ctx, "bench", driver.ClaimRequest{
					EventWrite: driver.EventWrite{Key: k, Payload: payload, Now: now, ExpiresAt: now.Add(24 * time.Hour)},
					Token:      "tok-" + k, LeaseUntil: now.Add(time.Minute)})
				if err == nil && rep.Outcome != driver.ClaimAcquired {
					err = fmt.Errorf("claim %s: outcome %d", k, rep.Outcome)
				}
				if err == nil {
					err = d.CompleteEvent(ctx, "bench", k, "tok-"+k, []byte("ok"), now, now.Add(24*time.Hour))
				}
				if err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	commits := float64(lastCommit(b, d) - start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(commits/float64(b.N), "commits/op")
	b.ReportMetric(2*commits/float64(b.N), "fdatasyncs/op")
}

// lastCommit returns the ID of the last committed write transaction.
func lastCommit(b *testing.B, d *Driver) int {
	var id int
	if err := d.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		b.Fatal(err)
	}
	return id
}

// BenchmarkCodec compares the binary value encoding with JSON for a
// typical completed event: encode plus decode, and bytes stored.
func BenchmarkCodec(b *testing.B) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	e := driver.Event{Key: "T024BE7LD:Ev0PV52K", Status: driver.EventCompleted, Payload: []byte(`{"type":"message","text":"hello"}`),
		Result: []byte("ok"), Attempts: 1, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
	b.Run("binary", func(b *testing.B) {
		var n int
		b.ReportAllocs()
		for b.Loop() {
			v := encodeEvent(&e, 12345)
			n = len(v)
			if _, _, err := decodeEvent(e.Key, v); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n), "bytes/value")
	})
	b.Run("json", func(b *testing.B) {
		var n int
		b.ReportAllocs()
		for b.Loop() {
			v, err := json.Marshal(&e)
			if err != nil {
				b.Fatal(err)
			}
			n = len(v)
			var out driver.Event
			if err := json.Unmarshal(v, &out); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n), "bytes/value")
	})
}

// BenchmarkListings: the recovery listings with no completed events held,
// and with a million (statetest.BenchmarkListings).
func BenchmarkListings(b *testing.B) {
	st, err := botstate.Open(context.Background(), "file://"+filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	statetest.BenchmarkListings(b, st)
}

// BenchmarkSnapshotMemory: export and migrate of a million items, peak heap
// (statetest.BenchmarkSnapshotMemory), file to file, fsync off.
func BenchmarkSnapshotMemory(b *testing.B) {
	open := func(name string) *botstate.Store {
		st, err := botstate.Open(context.Background(), "file://"+filepath.Join(b.TempDir(), name)+"?nosync=1")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	statetest.BenchmarkSnapshotMemory(b, open("src.db"), open("dst.db"), 1_000_000)
}

// BenchmarkBrowse: a dashboard page of conversations and of locks at the
// start and the end of 100 k of each (statetest.BenchmarkBrowse).
func BenchmarkBrowse(b *testing.B) {
	st, err := botstate.Open(context.Background(), "file://"+filepath.Join(b.TempDir(), "bench.db")+"?nosync=1")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	statetest.BenchmarkBrowse(b, st, 100_000)
}
