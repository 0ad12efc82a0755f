package botstate

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/botstate/botstate/driver"
)

// SnapshotVersion is the version of the snapshot format this package writes
// and reads.
const SnapshotVersion = 1

// snapshotHeader is the first line of every snapshot.
type snapshotHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
}

const snapshotFormat = "botstate-snapshot"

// maxSnapshotLine bounds one snapshot line: a full-size value, base64
// encoded, with room to spare.
const maxSnapshotLine = 64 << 20

// Record is one line of a snapshot.
type Record = driver.Record

// Export writes the namespace's whole state as a canonical snapshot: a header
// line, then one JSON line per live item, sorted by namespace, kind and key.
// The same state always exports to the same bytes, whatever the backend, and
// expiry times are absolute, so TTLs carry over. It returns the number of
// items written.
func (s *Store) Export(ctx context.Context, w io.Writer) (int, error) {
	return s.export(ctx, "Store.Export", w, s.ns)
}

// ExportAll is Export for every namespace of the backend.
func (s *Store) ExportAll(ctx context.Context, w io.Writer) (int, error) {
	return s.export(ctx, "Store.ExportAll", w, "")
}

func (s *Store) export(ctx context.Context, op string, w io.Writer, ns string) (int, error) {
	if err := s.begin(ctx, op); err != nil {
		return 0, err
	}
	if w == nil {
		return 0, invalid(op, "nil writer")
	}
	// Each record is encoded as it comes, in whatever order the backend
	// walks its state, and sorted by spilling: memory stays bounded
	// (spillChunk) however large the state.
	sorter := newSpillSorter()
	defer sorter.close()
	var line bytes.Buffer
	enc := json.NewEncoder(&line)
	enc.SetEscapeHTML(false)
	var key []byte
	err := s.core.drv.Export(ctx, ns, s.now(), func(r *Record) error {
		c := *r
		if err := canonicalRecord(&c); err != nil {
			return err
		}
		line.Reset()
		if err := enc.Encode(&c); err != nil {
			return err
		}
		key = recordSortKey(key, &c)
		return sorter.add(key, line.Bytes())
	})
	if err == nil {
		err = sorter.finish()
	}
	if err != nil {
		return 0, wrap(op, err)
	}
	bw := bufio.NewWriter(w)
	line.Reset()
	if err := enc.Encode(snapshotHeader{Format: snapshotFormat, Version: SnapshotVersion}); err != nil {
		return 0, wrap(op, err)
	}
	if _, err := bw.Write(line.Bytes()); err != nil {
		return 0, wrap(op, err)
	}
	n := 0
	err = sorter.each(func(_, l []byte) error {
		if _, err := bw.Write(l); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		return n, wrap(op, err)
	}
	return n, wrap(op, bw.Flush())
}

var kindOrder = func() map[driver.Kind]int {
	m := map[driver.Kind]int{}
	for i, k := range driver.Kinds {
		m[k] = i
	}
	return m
}()

// compareRecords is the order of a snapshot's lines, which recordSortKey
// encodes as bytes.
func compareRecords(a, b Record) int {
	return cmp.Or(
		cmp.Compare(a.NS, b.NS),
		cmp.Compare(kindOrder[a.Kind], kindOrder[b.Kind]),
		cmp.Compare(a.Channel, b.Channel),
		cmp.Compare(a.Key, b.Key),
		cmp.Compare(a.CorrelationID, b.CorrelationID),
	)
}

// canonicalRecord puts a record in the one form a snapshot holds: UTC
// times, canonical JSON data, no empty slices.
func canonicalRecord(r *Record) error {
	for _, t := range []*time.Time{&r.CreatedAt, &r.UpdatedAt, &r.LeaseUntil, &r.RetryAt, &r.ExpiresAt} {
		*t = utcOrZero(*t)
	}
	// An alert's timestamp is the caller's, kept to the nanosecond.
	if !r.Timestamp.IsZero() {
		r.Timestamp = r.Timestamp.UTC()
	}
	if len(r.Data) > 0 {
		d, err := driver.CanonicalObject(r.Data)
		if err != nil {
			return fmt.Errorf("%s %q: data: %w", r.Kind, r.Key, err)
		}
		r.Data = d
	}
	if len(r.Payload) == 0 {
		r.Payload = nil
	}
	if len(r.Result) == 0 {
		r.Result = nil
	}
	if len(r.Values) == 0 {
		r.Values = nil
	}
	if len(r.Holders) == 0 {
		r.Holders = nil
	}
	for i := range r.Holders {
		h := &r.Holders[i]
		h.AcquiredAt, h.ExpiresAt = utcOrZero(h.AcquiredAt), utcOrZero(h.ExpiresAt)
		if h.Entry != nil {
			e := *h.Entry
			canonicalEntry(&e)
			h.Entry = &e
		}
	}
	if len(r.Pending) == 0 {
		r.Pending = nil
	}
	for i := range r.Pending {
		canonicalEntry(&r.Pending[i])
	}
	if len(r.Skipped) == 0 {
		r.Skipped = nil
	}
	for i := range r.Skipped {
		canonicalEntry(&r.Skipped[i])
	}
	return nil
}

func canonicalEntry(e *Entry) {
	e.EnqueuedAt, e.ExpiresAt = utcOrZero(e.EnqueuedAt), utcOrZero(e.ExpiresAt)
	if len(e.Payload) == 0 {
		e.Payload = nil
	}
}

// utcOrZero puts a time the store computed in its canonical form: UTC, to
// the microsecond (what every backend keeps), zero left zero.
func utcOrZero(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}

// SnapshotError reports a snapshot line Import refused.
type SnapshotError struct {
	Line int
	Msg  string
}

func (e *SnapshotError) Error() string {
	return fmt.Sprintf("snapshot line %d: %s", e.Line, e.Msg)
}

// Unwrap makes a SnapshotError match ErrInvalidArgument.
func (e *SnapshotError) Unwrap() error { return ErrInvalidArgument }

// Import loads a snapshot written by Export or ExportAll, from any backend.
// Every line is read and checked before anything is written: a malformed
// line refuses the whole import with its line number (a *SnapshotError,
// matching ErrInvalidArgument) and nothing is imported. Items already
// expired are skipped; items that exist are replaced. It returns the number
// of items imported.
//
// Memory stays bounded whatever the snapshot's size: the checked records
// are sorted by spilling to temporary files (which also finds an item given
// twice), then written in batches of importBatch. A backend that fails
// midway (unavailable) leaves the batches before written; importing the
// same snapshot again is safe, since items are replaced.
func (s *Store) Import(ctx context.Context, r io.Reader) (int, error) {
	const op = "Store.Import"
	if err := s.begin(ctx, op); err != nil {
		return 0, err
	}
	if r == nil {
		return 0, invalid(op, "nil reader")
	}
	sorter := newSpillSorter()
	defer sorter.close()
	if err := s.readSnapshot(r, sorter); err != nil {
		return 0, &Error{Op: op, Err: err}
	}
	if err := checkDuplicates(sorter); err != nil {
		return 0, &Error{Op: op, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return 0, &Error{Op: op, Err: err}
	}
	n := 0
	batch := make([]Record, 0, importBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.core.drv.Import(ctx, batch); err != nil {
			return err
		}
		n += len(batch)
		clear(batch)
		batch = batch[:0]
		return nil
	}
	err := sorter.each(func(_, item []byte) error {
		_, live, rec, err := decodeSpilled(item)
		if err != nil || !live {
			return err
		}
		batch = append(batch, rec)
		if len(batch) == importBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return n, wrap(op, err)
}

// importBatch is how many records Import hands the backend at once.
const importBatch = 1000

// A spilled import item is the snapshot line number (uvarint), a byte
// saying whether the item is still live (1) or already expired (0), and
// the checked record as JSON.
func encodeSpilled(buf []byte, line int, live bool, rec *Record) ([]byte, error) {
	buf = binary.AppendUvarint(buf[:0], uint64(line))
	if live {
		buf = append(buf, 1)
	} else {
		buf = append(buf, 0)
	}
	b, err := json.Marshal(rec)
	return append(buf, b...), err
}

func decodeSpilled(b []byte) (line int, live bool, rec Record, err error) {
	l, n := binary.Uvarint(b)
	if n <= 0 || len(b) <= n {
		return 0, false, rec, errors.New("a corrupt spilled record")
	}
	line, live = int(l), b[n] == 1
	err = json.Unmarshal(b[n+1:], &rec)
	return line, live, rec, err
}

// checkDuplicates refuses a snapshot that gives an item twice, naming the
// line where an item first comes again and the line it first came on, as
// a reader going through the snapshot in order would.
func checkDuplicates(sorter *spillSorter) error {
	var prevKey []byte
	var prevLine int
	var prevKind driver.Kind
	var worst *SnapshotError
	err := sorter.each(func(key, item []byte) error {
		l, n := binary.Uvarint(item) // the line number alone: no JSON to decode
		if n <= 0 {
			return errors.New("a corrupt spilled record")
		}
		line := int(l)
		if prevKey != nil && bytes.Equal(key, prevKey) {
			// Same item as the group's first line; keep the earliest
			// second occurrence over all groups.
			if worst == nil || line < worst.Line {
				worst = &SnapshotError{Line: line, Msg: fmt.Sprintf("same %s as line %d", prevKind, prevLine)}
			}
			return nil
		}
		prevKey, prevLine, prevKind = append(prevKey[:0], key...), line, sortKeyKind(key)
		return nil
	})
	if err != nil {
		return err
	}
	if worst != nil {
		return worst
	}
	return nil
}

// readSnapshot checks every line of r and adds the records to sorter.
func (s *Store) readSnapshot(r io.Reader, sorter *spillSorter) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxSnapshotLine)
	line := 0
	now := s.now()
	var key, item []byte
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if line == 1 {
			var h snapshotHeader
			if err := strictDecode(b, &h); err != nil || h.Format != snapshotFormat {
				return &SnapshotError{Line: 1, Msg: fmt.Sprintf("not a botstate snapshot header (want {\"format\":%q,\"version\":%d})", snapshotFormat, SnapshotVersion)}
			}
			if h.Version != SnapshotVersion {
				return &SnapshotError{Line: 1, Msg: fmt.Sprintf("snapshot version %d, this build reads %d", h.Version, SnapshotVersion)}
			}
			continue
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return &SnapshotError{Line: line, Msg: "empty line"}
		}
		var rec Record
		if err := strictDecode(b, &rec); err != nil {
			return &SnapshotError{Line: line, Msg: err.Error()}
		}
		if err := s.checkRecord(&rec); err != nil {
			return &SnapshotError{Line: line, Msg: err.Error()}
		}
		live := rec.ExpiresAt.IsZero() || rec.ExpiresAt.After(now)
		var err error
		if item, err = encodeSpilled(item, line, live, &rec); err != nil {
			return err
		}
		key = recordSortKey(key, &rec)
		if err := sorter.add(key, item); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &SnapshotError{Line: line + 1, Msg: fmt.Sprintf("line over %d bytes", maxSnapshotLine)}
		}
		return err
	}
	if line == 0 {
		return &SnapshotError{Line: 1, Msg: "empty snapshot: no header"}
	}
	return sorter.finish()
}

func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value on the line")
	}
	return nil
}

// checkRecord applies to a snapshot record the same rules the API applies to
// the calls that would have written it, and normalizes it.
func (s *Store) checkRecord(r *Record) error {
	const op = "Import"
	if err := ValidNamespace(r.NS); err != nil {
		return err
	}
	needKey := func(what string) error { return checkKey(op, what, r.Key) }
	needObject := func() error {
		if len(r.Data) == 0 {
			return errors.New("data is missing")
		}
		d, err := driver.CanonicalObject(r.Data)
		if err != nil {
			return fmt.Errorf("data is not a JSON object: %v", err)
		}
		if err := s.checkSize(op, "data", d); err != nil { // as stored, as the API measures it
			return err
		}
		r.Data = d
		return nil
	}
	var err error
	switch r.Kind {
	case driver.KindEvent:
		if err = needKey("event key"); err == nil {
			if _, ok := driver.ParseEventStatus(r.Status); !ok {
				err = fmt.Errorf("unknown event status %q", r.Status)
			} else if r.Status == "claimed" && (r.Token == "" || r.LeaseUntil.IsZero()) {
				err = errors.New("claimed event without token or lease")
			} else if len(r.LastError) > MaxReasonLen || !utf8.ValidString(r.LastError) {
				err = fmt.Errorf("last error over %d bytes or not UTF-8", MaxReasonLen)
			} else if err = s.checkSize(op, "payload", r.Payload); err == nil {
				err = s.checkSize(op, "result", r.Result)
			}
		}
	case driver.KindConversation:
		if err = needKey("conversation key"); err == nil {
			if r.Version < 1 {
				err = fmt.Errorf("conversation version %d, want at least 1", r.Version)
			} else {
				err = needObject()
			}
		}
	case driver.KindSubscription:
		err = needKey("thread id")
	case driver.KindThreadState, driver.KindChannelState:
		if err = needKey("id"); err == nil {
			err = needObject()
		}
	case driver.KindCacheValue:
		if err = needKey("cache key"); err == nil {
			err = s.checkSize(op, "value", r.Payload)
		}
	case driver.KindCacheList:
		if err = needKey("cache key"); err == nil {
			if len(r.Values) == 0 || len(r.Values) > MaxListLen {
				err = fmt.Errorf("list of %d values, want 1 to %d", len(r.Values), MaxListLen)
			}
		}
	case driver.KindLock:
		if err = needKey("lock key"); err == nil {
			for _, h := range r.Holders {
				if h.Token == 0 || h.Token > r.Fence {
					err = fmt.Errorf("lock holder token %d not in (0, fence %d]", h.Token, r.Fence)
					break
				}
				if err = checkKey(op, "owner", h.Owner); err != nil {
					break
				}
			}
			if err == nil && len(r.Skipped) > driver.MaxSkipped {
				err = fmt.Errorf("%d skipped entries, over %d", len(r.Skipped), driver.MaxSkipped)
			}
		}
	case driver.KindAlert:
		if err = checkKey(op, "channel id", r.Channel); err == nil {
			if err = needKey("alert unique id"); err == nil {
				err = s.checkJSON(op, "alert body", []byte(r.Body))
			}
		}
	case driver.KindIssue:
		if err = checkKey(op, "channel id", r.Channel); err == nil {
			if err = needKey("issue unique id"); err == nil {
				if err = checkCorrelation(op, r.CorrelationID); err == nil {
					err = s.checkJSON(op, "issue body", []byte(r.Body))
				}
			}
		}
	case driver.KindMoveMapping:
		if err = checkKey(op, "channel id", r.Channel); err == nil {
			if err = checkCorrelation(op, r.CorrelationID); err == nil {
				err = s.checkJSON(op, "move mapping body", []byte(r.Body))
			}
		}
	case driver.KindProcessingState:
		if err = checkKey(op, "channel id", r.Channel); err == nil {
			err = s.checkJSON(op, "processing state body", []byte(r.Body))
		}
	default:
		err = fmt.Errorf("unknown kind %q", r.Kind)
	}
	if err != nil {
		return err
	}
	return canonicalRecord(r)
}
