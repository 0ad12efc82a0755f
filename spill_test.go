package botstate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/botstate/botstate/driver"
)

// TestSpillSorterSortsAsInMemory: with chunks small enough to spill many
// runs, the sorter gives the items in the order a stable in-memory sort
// gives, every time each is called, and leaves no file behind.
func TestSpillSorterSortsAsInMemory(t *testing.T) {
	for _, chunk := range []int{1 << 30, 4 << 10, 300} {
		s := &spillSorter{chunk: chunk}
		var want []spillItem
		rng := rand.New(rand.NewPCG(1, uint64(chunk)))
		for i := range 3000 {
			k := []byte(fmt.Sprintf("k%03d\x00%d", rng.IntN(500), rng.IntN(3)))
			l := []byte(fmt.Sprintf("line %d", i))
			want = append(want, spillItem{k, l})
			if err := s.add(k, l); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.finish(); err != nil {
			t.Fatal(err)
		}
		slices.SortStableFunc(want, func(a, b spillItem) int { return bytes.Compare(a.key, b.key) })
		for pass := range 2 {
			i := 0
			err := s.each(func(k, l []byte) error {
				if !bytes.Equal(k, want[i].key) || !bytes.Equal(l, want[i].line) {
					return fmt.Errorf("item %d: %q %q, want %q %q", i, k, l, want[i].key, want[i].line)
				}
				i++
				return nil
			})
			if err != nil || i != len(want) {
				t.Fatalf("chunk %d pass %d: %v after %d items", chunk, pass, err, i)
			}
		}
		if chunk < 1<<20 && len(s.runs) < 2 {
			t.Errorf("chunk %d: %d runs, the test did not spill", chunk, len(s.runs))
		}
		dir := s.dir
		s.close()
		if dir != "" {
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the runs' directory %s is left behind", dir)
			}
		}
	}
}

// TestRecordSortKeyOrdersAsCompareRecords, NUL bytes and prefixes
// included.
func TestRecordSortKeyOrdersAsCompareRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 3))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	var recs []Record
	for range 2000 {
		recs = append(recs, Record{
			NS:      pick("a", "ab", "b"),
			Kind:    driver.Kinds[rng.IntN(len(driver.Kinds))],
			Channel: pick("", "C", "C1", "C\x00", "C\x001"), Key: pick("", "k", "k\x00", "k\x00\x01", "k1", "kk"),
			CorrelationID: pick("", "x", "x\x00y", "xy"),
		})
	}
	var ka, kb []byte
	for i := range 20000 {
		a, b := &recs[rng.IntN(len(recs))], &recs[rng.IntN(len(recs))]
		ka, kb = recordSortKey(ka, a), recordSortKey(kb, b)
		if k := sortKeyKind(ka); k != a.Kind {
			t.Fatalf("the kind of %+v's key reads %q", a, k)
		}
		if got, want := bytes.Compare(ka, kb), compareRecords(*a, *b); got != want {
			t.Fatalf("pair %d: %+v vs %+v: keys compare %d, records %d", i, a, b, got, want)
		}
	}
}

// TestSnapshotsSpillingMatchInMemory: a store exported and imported with
// chunks small enough to spill gives the same bytes as without, finds a
// duplicate as the reader would, and imports shuffled lines.
func TestSnapshotsSpillingMatchInMemory(t *testing.T) {
	ctx := context.Background()
	src, err := Open(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i := range 500 {
		ns := src.Namespace(fmt.Sprintf("n%d", i%3))
		if err := ns.Cache().Set(ctx, fmt.Sprintf("k%04d", i), []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := ns.Events().Record(ctx, fmt.Sprintf("e%04d", i), []byte(`{"i":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	export := func() []byte {
		var b bytes.Buffer
		if _, err := src.ExportAll(ctx, &b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	whole := export()
	defer func(c int) { spillChunk = c }(spillChunk)
	spillChunk = 2 << 10
	if spilled := export(); !bytes.Equal(spilled, whole) {
		t.Fatal("the export that spilled differs from the one in memory")
	}
	lines := strings.Split(strings.TrimSuffix(string(whole), "\n"), "\n")
	body := lines[1:]
	rand.Shuffle(len(body), func(i, j int) { body[i], body[j] = body[j], body[i] })
	dst, err := Open(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	n, err := dst.Import(ctx, strings.NewReader(lines[0]+"\n"+strings.Join(body, "\n")+"\n"))
	if err != nil || n != 1000 {
		t.Fatalf("import of shuffled lines: %d %v", n, err)
	}
	var again bytes.Buffer
	if _, err := dst.ExportAll(ctx, &again); err != nil || !bytes.Equal(again.Bytes(), whole) {
		t.Fatalf("the imported store exports differently (%v)", err)
	}
	// Line 1 is the header: body[10] is line 12, and a copy of it at the
	// end is the first item that comes again.
	dup := append(append([]string{}, body...), body[10], body[3])
	_, err = dst.Import(ctx, strings.NewReader(lines[0]+"\n"+strings.Join(dup, "\n")+"\n"))
	var se *SnapshotError
	var rec Record
	if err := json.Unmarshal([]byte(body[10]), &rec); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("same %s as line %d", rec.Kind, 12)
	if !errors.As(err, &se) || se.Line != len(body)+2 || se.Msg != want {
		t.Fatalf("a duplicate: %v", err)
	}
}
