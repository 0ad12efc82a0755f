package driver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// EmptyObject is the data of a conversation or doc that holds nothing.
var EmptyObject = []byte("{}")

// MergeObjects returns the compact, key-sorted JSON object holding every
// top-level member of base, overwritten by every top-level member of patch
// (a null in patch stores null). Both must be JSON objects. Backends that
// merge in Go, inside their own atomic step, use it so that every backend
// produces the same bytes.
func MergeObjects(base, patch []byte) ([]byte, error) {
	m := map[string]json.RawMessage{}
	if len(base) > 0 {
		if err := json.Unmarshal(base, &m); err != nil {
			return nil, fmt.Errorf("stored data is not a JSON object: %w", err)
		}
	}
	var p map[string]json.RawMessage
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, fmt.Errorf("patch is not a JSON object: %w", err)
	}
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	for k, v := range p {
		m[k] = v
	}
	return CanonicalJSON(m)
}

// DataSize is what a size limit (botstate.WithMaxValueSize) counts for the
// data of a conversation or doc: the length of its canonical JSON (see
// CanonicalJSON), the bytes every backend returns for it. The portable
// package measures data and patches so, and a backend measures the result
// of a merge so, inside the merge's atomic step.
//
// A backend that keeps members apart instead of the object's bytes gets
// the same number from its members: ObjectSize of the count and the sum of
// MemberSize over them.
func DataSize(data []byte) int { return len(data) }

// MemberSize is what one member, name and canonical value, adds to the
// DataSize of an object: the name as a JSON string as CanonicalJSON writes
// it, the colon, the value and one comma.
func MemberSize(name string, value []byte) int {
	return quotedSize(name) + 1 + len(value) + 1
}

// ObjectSize is the DataSize of a canonical object of n members whose
// MemberSizes add up to sum: the braces, and one comma fewer than counted.
func ObjectSize(n, sum int) int {
	if n == 0 {
		return len(EmptyObject)
	}
	return sum + 1
}

// quotedSize is the length of s as a JSON string written by encoding/json
// without HTML escaping: quotes and backslashes take two bytes, \b, \f,
// \n, \r and \t two, other control characters six (\u00XX), U+2028 and
// U+2029 six (\u2028), and an invalid byte six (\ufffd); every other byte
// is itself.
func quotedSize(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20:
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// MergeWithin is MergeObjects whose result may take at most maxSize bytes
// (DataSize; zero: no limit): a bigger result is refused with
// CheckMergedSize's error.
func MergeWithin(base, patch []byte, maxSize int) ([]byte, error) {
	merged, err := MergeObjects(base, patch)
	if err != nil {
		return nil, err
	}
	if err := CheckMergedSize(DataSize(merged), maxSize); err != nil {
		return nil, err
	}
	return merged, nil
}

// CheckMergedSize returns nil when merged data of size bytes (DataSize)
// fits in maxSize, and otherwise the ErrTooLarge a merge over the limit
// answers. A maxSize of zero is no limit.
func CheckMergedSize(size, maxSize int) error {
	if maxSize > 0 && size > maxSize {
		return fmt.Errorf("merged data would be %d bytes, over the %d-byte limit: %w", size, maxSize, ErrTooLarge)
	}
	return nil
}

// CanonicalJSON encodes v compactly, with object keys sorted and without
// HTML escaping: the one form data takes in storage and in snapshots.
func CanonicalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// CanonicalObject re-encodes a JSON object in canonical form, sorting nested
// object keys too, and keeping numbers exactly as written.
func CanonicalObject(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after JSON object")
	}
	return CanonicalJSON(m)
}
