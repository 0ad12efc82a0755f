package driver

import (
	"bytes"
	"encoding/json"
	"fmt"
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
