package botstate

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/botstate/botstate/driver"
)

// spillSorter sorts snapshot lines by a byte key with bounded memory: it
// keeps up to spillChunk bytes of lines in memory, and writes each full
// chunk, sorted, to a temporary file (a run); finish sorts what is left,
// and each merges the runs. Export and Import use it, so neither holds a
// whole snapshot in memory, whatever its size. Ties keep the order of add
// (stable sort, runs merged in the order written).
type spillSorter struct {
	chunk int // bytes of keys and lines kept in memory before a spill
	items []spillItem
	bytes int
	dir   string // created at the first spill
	runs  []string
}

type spillItem struct {
	key, line []byte
}

// spillChunk bounds the memory of a sort: 16 MiB of keys and lines.
var spillChunk = 16 << 20 // a variable for tests

func newSpillSorter() *spillSorter { return &spillSorter{chunk: spillChunk} }

// add keeps a copy of key and line.
func (s *spillSorter) add(key, line []byte) error {
	s.items = append(s.items, spillItem{key: bytes.Clone(key), line: bytes.Clone(line)})
	s.bytes += len(key) + len(line) + 64
	if s.bytes >= s.chunk {
		return s.spill()
	}
	return nil
}

func (s *spillSorter) sortItems() {
	slices.SortStableFunc(s.items, func(a, b spillItem) int { return bytes.Compare(a.key, b.key) })
}

// spill writes the items in memory, sorted, as a new run.
func (s *spillSorter) spill() error {
	if len(s.items) == 0 {
		return nil
	}
	s.sortItems()
	if s.dir == "" {
		d, err := os.MkdirTemp("", "botstate-sort-")
		if err != nil {
			return fmt.Errorf("sorting the snapshot: %w", err)
		}
		s.dir = d
	}
	f, err := os.CreateTemp(s.dir, "run-")
	if err != nil {
		return fmt.Errorf("sorting the snapshot: %w", err)
	}
	w := bufio.NewWriterSize(f, 256<<10)
	var n [binary.MaxVarintLen64]byte
	for _, it := range s.items {
		w.Write(n[:binary.PutUvarint(n[:], uint64(len(it.key)))])
		w.Write(it.key)
		w.Write(n[:binary.PutUvarint(n[:], uint64(len(it.line)))])
		w.Write(it.line)
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sorting the snapshot: %w", err)
	}
	s.runs = append(s.runs, f.Name())
	clear(s.items)
	s.items, s.bytes = s.items[:0], 0
	return nil
}

// finish ends the adds: the rest is sorted in memory, or spilled when
// runs exist. each may then be called any number of times.
func (s *spillSorter) finish() error {
	if len(s.runs) == 0 {
		s.sortItems()
		return nil
	}
	return s.spill()
}

// each calls fn with every item in key order. The slices are valid only
// during the call.
func (s *spillSorter) each(fn func(key, line []byte) error) error {
	if len(s.runs) == 0 {
		for _, it := range s.items {
			if err := fn(it.key, it.line); err != nil {
				return err
			}
		}
		return nil
	}
	h := make(runHeap, 0, len(s.runs))
	for i, name := range s.runs {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("sorting the snapshot: %w", err)
		}
		defer f.Close()
		r := &runReader{r: bufio.NewReaderSize(f, 64<<10), order: i}
		ok, err := r.next()
		if err != nil {
			return err
		}
		if ok {
			h = append(h, r)
		}
	}
	heap.Init(&h)
	for len(h) > 0 {
		r := h[0]
		if err := fn(r.key, r.line); err != nil {
			return err
		}
		ok, err := r.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return nil
}

// close removes the runs.
func (s *spillSorter) close() {
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
	s.items, s.runs = nil, nil
}

// runReader reads one run's items in order.
type runReader struct {
	r         *bufio.Reader
	order     int
	key, line []byte
}

func (r *runReader) next() (bool, error) {
	read := func(buf []byte) ([]byte, error) {
		n, err := binary.ReadUvarint(r.r)
		if err != nil {
			return nil, err
		}
		buf = slices.Grow(buf[:0], int(n))[:n]
		_, err = io.ReadFull(r.r, buf)
		return buf, err
	}
	k, err := read(r.key)
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err == nil {
		r.key = k
		r.line, err = read(r.line)
	}
	if err != nil {
		return false, fmt.Errorf("sorting the snapshot: reading a run: %w", err)
	}
	return true, nil
}

// runHeap orders the runs by their current key, then by run.
type runHeap []*runReader

func (h runHeap) Len() int { return len(h) }
func (h runHeap) Less(i, j int) bool {
	if c := bytes.Compare(h[i].key, h[j].key); c != 0 {
		return c < 0
	}
	return h[i].order < h[j].order
}
func (h runHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)   { *h = append(*h, x.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}

// recordSortKey encodes compareRecords' order (namespace, kind, channel,
// key, correlation id) as bytes that compare the same way: each string
// with its NUL bytes escaped and a NUL terminator, the kind as its rank.
// Equal keys mean the same item (recordIdentity).
func recordSortKey(buf []byte, r *Record) []byte {
	buf = buf[:0]
	str := func(s string) {
		for i := 0; i < len(s); i++ {
			if s[i] == 0 {
				buf = append(buf, 0, 1)
			} else {
				buf = append(buf, s[i])
			}
		}
		buf = append(buf, 0, 0)
	}
	str(r.NS)
	buf = binary.BigEndian.AppendUint16(buf, uint16(kindOrder[r.Kind]))
	str(r.Channel)
	str(r.Key)
	str(r.CorrelationID)
	return buf
}

// sortKeyKind returns the kind a recordSortKey holds.
func sortKeyKind(key []byte) driver.Kind {
	// The namespace ends at the first 0, 0 pair (a 0 inside is 0, 1).
	for i := 0; i+3 < len(key); i++ {
		if key[i] == 0 {
			if key[i+1] == 0 {
				rank := int(binary.BigEndian.Uint16(key[i+2:]))
				if rank < len(driver.Kinds) {
					return driver.Kinds[rank]
				}
				return ""
			}
			i++ // an escaped 0
		}
	}
	return ""
}
