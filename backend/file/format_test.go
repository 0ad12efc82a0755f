package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate/driver"
)

// writeFormat1 builds, at path, the file testdata/format1.txt describes:
// every key and value, byte for byte, that the format-1 code (before failed
// events, retry times, holder entries and skipped entries) wrote for a few
// events and locks, in the buckets format 1 had.
func writeFormat1(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "format1.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if string(name) == string(bFailed) || string(name) == string(bLockLapse) {
				continue // not in format 1
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "#") || line == "" {
				continue
			}
			parts := strings.Split(line, " ")
			k, err := hex.DecodeString(parts[1])
			if err != nil {
				return err
			}
			v, err := hex.DecodeString(parts[2])
			if err != nil {
				return err
			}
			if err := tx.Bucket([]byte(parts[0])).Put(k, v); err != nil {
				return err
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReadsFormat1: a file written by the format-1 code opens, is upgraded
// to format 2 with its indexes complete, reads back with the new fields
// zero, lists its events and lapsed locks, and takes the new operations.
func TestReadsFormat1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	writeFormat1(t, path)
	// The values as format 1 stored them, to compare with what format 2
	// writes for the same records.
	stored := map[string][]byte{}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bEvents, bLocks} {
			_ = tx.Bucket(name).ForEach(func(k, v []byte) error {
				stored[string(name)+" "+string(k)] = bytes.Clone(v)
				return nil
			})
		}
		return nil
	})
	db.Close()

	d, err := open(options{path: path, timeout: time.Second, noSync: true}, driver.Config{SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	checkIndexes(t, d)
	_ = d.db.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket(bMeta).Get([]byte("format"))); v != "2" {
			t.Errorf("format after open: %q, want 2", v)
		}
		// Re-encoding what format 1 wrote gives its bytes back: records
		// without the new fields are stored exactly as before.
		for sk, v := range stored {
			name, bk, _ := strings.Cut(sk, " ")
			_, k, _ := splitNS([]byte(bk))
			var again []byte
			if name == string(bEvents) {
				e, seq, err := decodeEvent(k, v)
				if err != nil {
					t.Fatalf("%s: %v", sk, err)
				}
				if e.LastError != "" || !e.RetryAt.IsZero() {
					t.Errorf("%s: new fields not zero: %+v", sk, e)
				}
				again = encodeEvent(&e, seq)
			} else {
				st, err := decodeLock(k, v)
				if err != nil {
					t.Fatalf("%s: %v", sk, err)
				}
				if st.Skipped != nil || st.Holders[0].Entry != nil {
					t.Errorf("%s: new fields not zero: %+v", sk, st)
				}
				again = encodeLock(&st)
			}
			if !bytes.Equal(again, v) {
				t.Errorf("%s: re-encoded %x, format 1 wrote %x", sk, again, v)
			}
		}
		return nil
	})

	// The file was written at 2026-01-02T03:04:05Z: events claimed for a
	// minute and an hour, lock holders for a minute, entries for two hours.
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	keys := func(es []driver.Event, err error) []string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, e := range es {
			out = append(out, e.Key)
		}
		return out
	}
	eqKeys := func(got, want []string, what string) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	eqKeys(keys(d.PendingEvents(ctx, "ns", at, 0)), []string{"a-claimed", "b-released", "d-recorded"}, "pending")
	eqKeys(keys(d.DueEvents(ctx, "ns", at, 0)), []string{"b-released"}, "due at once")
	eqKeys(keys(d.DueEvents(ctx, "ns", at.Add(2*time.Minute), 0)), []string{"a-claimed", "b-released"}, "due after the lease")
	eqKeys(keys(d.FailedEvents(ctx, "ns", at, 0)), []string{}, "failed")

	lapsed := func(now time.Time) []string {
		t.Helper()
		sts, err := d.LapsedLocks(ctx, "ns", now, 0)
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, st := range sts {
			out = append(out, st.Key)
		}
		return out
	}
	eqKeys(lapsed(at), []string{}, "lapsed while held")
	eqKeys(lapsed(at.Add(2*time.Minute)), []string{"queued"}, "lapsed after the holder's lease (index built by the upgrade)")
	eqKeys(lapsed(at.Add(3*time.Hour)), []string{}, "lapsed after the entries' end")

	// The new operations work on the old records.
	now := at.Add(time.Second)
	must(t, d.ReleaseEvent(ctx, "ns", driver.ReleaseRequest{Key: "a-claimed", Token: "tok-a-claimed", Now: now,
		Fail: true, Reason: "poison", ExpiresAt: now.Add(time.Hour)}))
	eqKeys(keys(d.FailedEvents(ctx, "ns", now, 0)), []string{"a-claimed"}, "failed after Fail")
	eqKeys(keys(d.PendingEvents(ctx, "ns", now, 0)), []string{"b-released", "d-recorded"}, "pending after Fail")
	must(t, d.RetryEvent(ctx, "ns", "a-claimed", now, now.Add(time.Hour)))
	e, ok, err := d.LookupEvent(ctx, "ns", "a-claimed", now)
	if err != nil || !ok || e.Status != driver.EventReleased || e.LastError != "poison" || e.Attempts != 0 {
		t.Fatalf("after retry: %+v %v %v", e, ok, err)
	}
	checkIndexes(t, d)
}

// TestRefusesUnknownFormat: a file of a format this build does not know is
// refused, not misread.
func TestRefusesUnknownFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v9.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bMeta)
		if err != nil {
			return err
		}
		return b.Put([]byte("format"), []byte("9"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	d, err := open(options{path: path, timeout: time.Second}, driver.Config{})
	if err == nil {
		d.Close()
		t.Fatal("opened a format-9 file")
	}
	if !strings.Contains(err.Error(), `format version "9"`) {
		t.Fatalf("error %v", err)
	}
}

// TestCodecTails: the fields format 2 added round-trip, and cost no byte
// when unset.
func TestCodecTails(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	plain := driver.Event{Key: "k", Status: driver.EventReleased, Payload: []byte("p"), Attempts: 2, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	full := plain
	full.LastError, full.RetryAt = "upstream 503 ☠", now.Add(time.Minute)
	for _, e := range []driver.Event{plain, full, {Key: "f", Status: driver.EventFailed, LastError: "bad"}, {Key: "r", Status: driver.EventReleased, RetryAt: now}} {
		got, seq, err := decodeEvent(e.Key, encodeEvent(&e, 7))
		if err != nil || seq != 7 || !reflect.DeepEqual(got, e) {
			t.Errorf("event round trip: %+v, %d, %v; want %+v", got, seq, err, e)
		}
		iv, err := decodeIndexValue(indexValue(&e))
		if err != nil || iv.Status != e.Status || !iv.RetryAt.Equal(e.RetryAt) || !iv.ExpiresAt.Equal(e.ExpiresAt) {
			t.Errorf("index value round trip: %+v, %v; want %+v", iv, err, e)
		}
	}
	if a, b := len(encodeEvent(&plain, 7)), len(encodeEvent(&full, 7)); b <= a {
		t.Errorf("tail not written: %d and %d bytes", a, b)
	}
	v := encodeEvent(&plain, 7)
	if _, _, err := decodeEvent("k", append(v, 5, 'x')); err == nil {
		t.Error("a truncated tail decoded")
	}

	entry := func(p string, exp time.Time) driver.Entry {
		return driver.Entry{Payload: []byte(p), EnqueuedAt: now, ExpiresAt: exp}
	}
	e1, e2 := entry("own", now.Add(time.Hour)), entry("", time.Time{})
	locks := []driver.LockState{
		{Key: "plain", Fence: 9, Holders: []driver.Holder{{Owner: "w", Token: 9, AcquiredAt: now, ExpiresAt: now.Add(time.Minute)}},
			Pending: []driver.Entry{entry("a", now.Add(time.Hour))}},
		{Key: "entries", Fence: 12, Holders: []driver.Holder{
			{Owner: "w1", Token: 11, AcquiredAt: now, ExpiresAt: now.Add(time.Minute)},
			{Owner: "w2", Token: 12, AcquiredAt: now, ExpiresAt: now.Add(time.Minute), Entry: &e1},
			{Owner: "w3", Token: 10, AcquiredAt: now, Entry: &e2}}},
		{Key: "skipped", Fence: 3, ExpiresAt: now.Add(time.Hour), Skipped: []driver.Entry{entry("s1", now), entry("s2", time.Time{})}},
	}
	for _, st := range locks {
		got, err := decodeLock(st.Key, encodeLock(&st))
		if err != nil || !reflect.DeepEqual(got, st) {
			t.Errorf("lock round trip: %+v, %v; want %+v", got, err, st)
		}
	}
	bad := encodeLock(&locks[0])
	if _, err := decodeLock("plain", append(bad, 2)); err == nil {
		t.Error("a bad holder-entry flag decoded")
	}
}
