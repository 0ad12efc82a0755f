package file

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/statetest"
)

// openStore opens a Store on a fresh file in t's temporary directory. The
// file is durable (fsync on): the suite runs on what users get.
func openStore(t *testing.T, opts ...botstate.Option) *botstate.Store {
	t.Helper()
	u := "file://" + filepath.ToSlash(filepath.Join(t.TempDir(), "state.db"))
	st, err := botstate.Open(context.Background(), u, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestConformance(t *testing.T) {
	statetest.Run(t, openStore)
}

func TestParseURL(t *testing.T) {
	cases := []struct {
		url     string
		path    string
		timeout time.Duration
		noSync  bool
		bad     bool
	}{
		{url: "file:///var/lib/bot/state.db", path: "/var/lib/bot/state.db", timeout: DefaultLockTimeout},
		{url: "file://localhost/var/state.db", path: "/var/state.db", timeout: DefaultLockTimeout},
		{url: "file:state.db", path: "state.db", timeout: DefaultLockTimeout},
		{url: "file:data/state%20x.db", path: "data/state x.db", timeout: DefaultLockTimeout},
		{url: "file://./x.db", path: "./x.db", timeout: DefaultLockTimeout},
		{url: "file://../x.db", path: "../x.db", timeout: DefaultLockTimeout},
		{url: "file:///tmp/s.db?timeout=250ms&nosync=1", path: "/tmp/s.db", timeout: 250 * time.Millisecond, noSync: true},
		{url: "file:///tmp/s.db?nosync=0", path: "/tmp/s.db", timeout: DefaultLockTimeout},
		{url: "file://", bad: true},
		{url: "file:///", bad: true},
		{url: "file:///tmp/dir/", bad: true},
		{url: "file://otherhost/x.db", bad: true},
		{url: "file:///tmp/s.db?timeout=-1s", bad: true},
		{url: "file:///tmp/s.db?timeout=soon", bad: true},
		{url: "file:///tmp/s.db?nosync=maybe", bad: true},
		{url: "file:///tmp/s.db?cache=big", bad: true},
		{url: "file://user@/tmp/s.db", bad: true},
	}
	for _, c := range cases {
		t.Run(c.url, func(t *testing.T) {
			u, err := url.Parse(c.url)
			if err != nil {
				t.Fatal(err)
			}
			o, err := parseURL(u)
			if c.bad {
				if !errors.Is(err, driver.ErrInvalidArgument) {
					t.Fatalf("parseURL(%q) = %+v, %v; want ErrInvalidArgument", c.url, o, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.path != filepath.FromSlash(c.path) || o.timeout != c.timeout || o.noSync != c.noSync {
				t.Fatalf("parseURL(%q) = %+v", c.url, o)
			}
		})
	}
}

// TestRelativeURL opens file:name relative to the working directory.
func TestRelativeURL(t *testing.T) {
	t.Chdir(t.TempDir())
	st, err := botstate.Open(context.Background(), "file:"+DefaultPath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Events().Record(context.Background(), "k", nil); err != nil {
		t.Fatal(err)
	}
	if got := st.Driver().(*Driver).Path(); got != DefaultPath {
		t.Fatalf("path %q, want %q", got, DefaultPath)
	}
}

// TestSurvivesReopen: what a store wrote is there after Close and Open.
func TestSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	u := "file://" + filepath.Join(t.TempDir(), "state.db")
	st, err := botstate.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	ev := st.Events()
	c, err := ev.Claim(ctx, "k1", []byte("p"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Complete(ctx, c.Token, []byte("done")); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ev.Seen(ctx, "k1"); !errors.Is(err, botstate.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	st, err = botstate.Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.Events().Get(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != driver.EventCompleted || string(got.Result) != "done" || string(got.Payload) != "p" {
		t.Fatalf("after reopen: %+v", got)
	}
	if err := st.Driver().(*Driver).Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDriverAfterClose: every method of a closed driver returns ErrClosed.
func TestDriverAfterClose(t *testing.T) {
	ctx := context.Background()
	d, err := open(options{path: filepath.Join(t.TempDir(), "s.db"), timeout: time.Second, noSync: true}, driver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	now := time.Now()
	if _, err := d.RecordEvent(ctx, "ns", driver.EventWrite{Key: "k", Now: now}); !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("RecordEvent after Close: %v", err)
	}
	if _, _, err := d.LookupEvent(ctx, "ns", "k", now); !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("LookupEvent after Close: %v", err)
	}
}

// TestCorruptValue: a value that does not decode is an error, not a panic.
func TestCorruptValue(t *testing.T) {
	for _, v := range [][]byte{nil, {0x80}, {2, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if _, _, err := decodeEvent("k", v); err == nil {
			t.Errorf("decodeEvent(%x) accepted", v)
		}
		if _, err := decodeLock("k", v); err == nil && len(v) > 0 {
			t.Errorf("decodeLock(%x) accepted", v)
		}
	}
	e := driver.Event{Key: "k", Status: driver.EventClaimed, Payload: []byte{}, Token: "t", Attempts: 3,
		CreatedAt: time.Now().UTC(), LeaseUntil: time.Now().Add(time.Minute).UTC()}
	got, seq, err := decodeEvent("k", encodeEvent(&e, 42))
	if err != nil || seq != 42 || got.Payload == nil || got.Result != nil || !got.CreatedAt.Equal(e.CreatedAt) ||
		got.CreatedAt != e.CreatedAt || got.ExpiresAt != (time.Time{}) || got.Token != "t" || got.Attempts != 3 {
		t.Fatalf("round trip: %+v %d %v", got, seq, err)
	}
	if !strings.Contains(errCorrupt.Error(), "corrupt") {
		t.Fatal(errCorrupt)
	}
}

// TestGroupCommitIsolation: in a group, a function that fails (or panics)
// has none of its writes committed and gets its own error, while the
// others' writes commit; a call whose context ended while it waited is
// dropped without running.
func TestGroupCommitIsolation(t *testing.T) {
	ctx := context.Background()
	d, err := open(options{path: filepath.Join(t.TempDir(), "s.db"), timeout: time.Second, noSync: true}, driver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	put := func(k string) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put([]byte(k), []byte("v")) }
	}
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Go(func() {
			k := fmt.Sprintf("k%d", i)
			switch i % 10 {
			case 3:
				errs[i] = d.write(ctx, func(tx *bolt.Tx) error {
					if err := put(k)(tx); err != nil {
						return err
					}
					return boom
				})
			case 7:
				errs[i] = d.write(ctx, func(tx *bolt.Tx) error {
					_ = put(k)(tx)
					panic("bad call")
				})
			default:
				errs[i] = d.write(ctx, put(k))
			}
		})
	}
	wg.Wait()
	err = d.db.View(func(tx *bolt.Tx) error {
		for i, err := range errs {
			stored := tx.Bucket(bMeta).Get(fmt.Appendf(nil, "k%d", i)) != nil
			switch i % 10 {
			case 3:
				if !errors.Is(err, boom) || stored {
					t.Errorf("failing call %d: err %v, stored %v", i, err, stored)
				}
			case 7:
				if err == nil || !strings.Contains(err.Error(), "panic") || stored {
					t.Errorf("panicking call %d: err %v, stored %v", i, err, stored)
				}
			default:
				if err != nil || !stored {
					t.Errorf("call %d: err %v, stored %v", i, err, stored)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	ran := false
	r := &commitReq{ctx: cctx, fn: func(*bolt.Tx) error { ran = true; return nil }, done: make(chan error, 1)}
	d.reqs <- r
	err = <-r.done
	if ran || !errors.Is(err, context.Canceled) || !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("cancelled call: ran %v, err %v", ran, err)
	}
}
