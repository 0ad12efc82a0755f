package file

import (
	"encoding/binary"
	"errors"
	"time"
)

// Values are stored in a small binary form of their own: varints for
// numbers and lengths, seconds and nanoseconds for times. A typical
// completed event takes 65 bytes against 256 in JSON and encodes plus
// decodes in about 0.25 µs against 3.5 µs (BenchmarkCodec), and every byte
// written here is fsynced.
//
// Fields added after format 1 go in an optional tail at the end of a value,
// written only when one of them is set: a value without them is byte for
// byte what format 1 wrote, and a format-1 value reads back with them zero
// (decoder.more reports whether a tail follows).

// errCorrupt reports a stored value this build cannot decode.
var errCorrupt = errors.New("file: stored value is corrupt or from an unknown format version")

// zeroSec is time.Time{}.Unix(): times are stored as seconds from year 1, so
// the zero time takes one byte.
const zeroSec = -62135596800

type encoder struct{ b []byte }

func (e *encoder) uint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }

func (e *encoder) int(v int64) { e.b = binary.AppendVarint(e.b, v) }

func (e *encoder) byte(v byte) { e.b = append(e.b, v) }

// bytes keeps nil and empty apart (length+1, 0 for nil), so a value reads
// back exactly as it was given.
func (e *encoder) bytes(p []byte) {
	if p == nil {
		e.uint(0)
		return
	}
	e.uint(uint64(len(p)) + 1)
	e.b = append(e.b, p...)
}

func (e *encoder) string(s string) {
	e.uint(uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.int(0)
		return
	}
	e.int(t.Unix() - zeroSec)
	e.uint(uint64(t.Nanosecond()))
}

// decoder reads what encoder wrote. The first failure sticks in err and
// later reads return zero values, so callers check err once at the end.
// Every slice it returns is a copy: bbolt's memory is only valid inside the
// transaction that read it.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = errCorrupt, nil }

// more reports whether bytes are left to read: an optional tail follows.
func (d *decoder) more() bool { return d.err == nil && len(d.b) > 0 }

func (d *decoder) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) take(n uint64) []byte {
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uint()
	if n == 0 {
		return nil
	}
	return append([]byte{}, d.take(n-1)...)
}

func (d *decoder) string() string { return string(d.take(d.uint())) }

func (d *decoder) time() time.Time {
	s := d.int()
	if s == 0 {
		return time.Time{}
	}
	ns := d.uint()
	if ns >= 1e9 {
		d.fail()
		return time.Time{}
	}
	return time.Unix(s+zeroSec, int64(ns)).UTC()
}

// count reads a list length, refusing one longer than the bytes left could
// hold, so a corrupt value cannot make us allocate without bound.
func (d *decoder) count() int {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

// ---- keys --------------------------------------------------------------------

// Keys are built from parts joined by NUL. Namespaces, keys, ids, channels
// and correlation ids never hold NUL (the portable package refuses them), so
// the joined form is unambiguous, "C1" can never match "C12" as a prefix
// ("C1\x00" is not a prefix of "C12\x00"), and bytewise order within one
// namespace is the order of the last part.

// key joins parts with NUL into a fresh slice (bbolt keeps the slices given
// to Put until the transaction ends, so keys are never reused buffers).
func key(parts ...string) []byte {
	n := len(parts) - 1
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

// prefix is key(parts...) followed by NUL: every key that has these parts
// as its leading parts starts with it.
func prefix(parts ...string) []byte { return append(key(parts...), 0) }

// sortTime is a time as 12 bytes whose bytewise order is time order: the
// seconds with the sign bit flipped, then the nanoseconds, big-endian.
func sortTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

const sortTimeLen = 12
