package statetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
)

// ListingSizes are the numbers of completed events BenchmarkListings holds
// by default: none, and a million.
var ListingSizes = []int{0, 1_000_000}

// BenchmarkListings measures the recovery listings (Pending, Expired, Due
// and Failed, ten events each) of a namespace that holds a hundred events
// of each kind a listing returns — recorded, lapsed claims, released and
// failed — and, in turn, each number of completed events in sizes
// (ListingSizes when none): one sub-benchmark per listing and size, named
// completed=N/Listing. A listing that reads only the events it can return
// costs the same at every size. The completed events are loaded with
// Store.Import, in chunks, into a namespace of their own per size, which
// the benchmark forgets afterwards only by their expiry (a day).
func BenchmarkListings(b *testing.B, st *botstate.Store, sizes ...int) {
	if len(sizes) == 0 {
		sizes = ListingSizes
	}
	ctx := context.Background()
	for _, n := range sizes {
		ns := st.Namespace(fmt.Sprintf("listings-%d-%d", n, time.Now().UnixNano()))
		if err := fillListings(ctx, ns, n); err != nil {
			b.Fatal(err)
		}
		ev := ns.Events()
		listings := []struct {
			name string
			list func(context.Context, int) ([]botstate.Event, error)
		}{
			{"Pending", ev.Pending}, {"Expired", ev.Expired}, {"Due", ev.Due}, {"Failed", ev.Failed},
		}
		for _, l := range listings {
			b.Run(fmt.Sprintf("completed=%d/%s", n, l.name), func(b *testing.B) {
				for b.Loop() {
					got, err := l.list(ctx, 10)
					if err != nil {
						b.Fatal(err)
					}
					if len(got) != 10 {
						b.Fatalf("%s listed %d events, want 10", l.name, len(got))
					}
				}
			})
		}
	}
}

// fillListings imports into ns n completed events, then a hundred events of
// each other kind, all created an hour ago and kept for a day.
func fillListings(ctx context.Context, ns *botstate.Store, n int) error {
	now := time.Now().UTC()
	created := now.Add(-time.Hour)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	const header = `{"format":"botstate-snapshot","version":1}` + "\n"
	buf.WriteString(header)
	flush := func() error {
		if buf.Len() == len(header) {
			return nil
		}
		_, err := ns.Import(ctx, &buf)
		buf.Reset()
		buf.WriteString(header)
		return err
	}
	add := func(r botstate.Record) error {
		r.Kind, r.NS, r.CreatedAt, r.ExpiresAt = driver.KindEvent, ns.Name(), created, now.Add(24*time.Hour)
		if r.Payload == nil {
			r.Payload = []byte(`{"text":"hello"}`)
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
		if buf.Len() > 8<<20 {
			return flush()
		}
		return nil
	}
	for i := range n {
		if err := add(botstate.Record{Key: fmt.Sprintf("done-%07d", i), Status: "completed", Attempts: 1}); err != nil {
			return err
		}
	}
	for i := range 100 {
		for _, r := range []botstate.Record{
			{Key: fmt.Sprintf("recorded-%03d", i), Status: "recorded"},
			{Key: fmt.Sprintf("lapsed-%03d", i), Status: "claimed", Token: fmt.Sprintf("tok-%03d", i), Attempts: 1, LeaseUntil: created.Add(time.Minute)},
			{Key: fmt.Sprintf("released-%03d", i), Status: "released", Attempts: 1},
			{Key: fmt.Sprintf("failed-%03d", i), Status: "failed", Attempts: 5, LastError: "boom"},
		} {
			if err := add(r); err != nil {
				return err
			}
		}
	}
	return flush()
}
