package dispatch

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzCodec checks that the dispatcher's records round-trip; that a record
// cut short anywhere before its payload, or of another version, is refused
// (errCodec) rather than read as another record, and one cut in its payload
// reads back its route and scope with the payload's start; and that no
// input, however malformed (a store shared with other code holds
// anything), makes the decoders panic.
func FuzzCodec(f *testing.F) {
	f.Add("route", "thread-1", []byte("payload"), uint16(0))
	f.Add("", "", []byte{}, uint16(1))
	f.Add("r", "a\x00b", []byte{0xff, 0x01}, uint16(3))
	f.Fuzz(func(t *testing.T, a, b string, payload []byte, cut uint16) {
		env := envelope{route: a, scope: b, payload: payload}
		enc := env.encode()
		got, err := decodeEnvelope(enc)
		if err != nil || got.route != a || got.scope != b || !bytes.Equal(got.payload, payload) {
			t.Fatalf("envelope round trip: %+v, %v", got, err)
		}
		e := entry{key: a, token: b, payload: payload}
		ge, err := decodeEntry(e.encode())
		if a != "" && (err != nil || ge.key != a || ge.token != b || !bytes.Equal(ge.payload, payload)) {
			t.Fatalf("entry round trip: %+v, %v", ge, err)
		}
		if a == "" && !errors.Is(err, errCodec) {
			t.Fatalf("an entry without a key decoded: %+v, %v", ge, err)
		}

		// Cut short: the header (version, two lengths, two strings) must
		// be whole; a cut payload is only shorter.
		header := len(enc) - len(payload)
		n := int(cut) % (len(enc) + 1)
		short, err := decodeEnvelope(enc[:n])
		switch {
		case n < header && !errors.Is(err, errCodec):
			t.Fatalf("%x cut to %d bytes (header %d) decoded: %+v, %v", enc, n, header, short, err)
		case n >= header && (err != nil || short.route != a || short.scope != b || !bytes.Equal(short.payload, payload[:n-header])):
			t.Fatalf("%x cut to %d bytes in its payload: %+v, %v", enc, n, short, err)
		}
		other := bytes.Clone(enc)
		other[0]++
		if _, err := decodeEnvelope(other); !errors.Is(err, errCodec) {
			t.Fatalf("a record of version %d decoded: %v", other[0], err)
		}

		// Raw bytes as a record: a value or errCodec, never a panic.
		for _, raw := range [][]byte{payload, append([]byte{codecVersion}, payload...)} {
			if _, err := decodeEnvelope(raw); err != nil && !errors.Is(err, errCodec) {
				t.Fatalf("decodeEnvelope(%x): %v", raw, err)
			}
			if _, err := decodeEntry(raw); err != nil && !errors.Is(err, errCodec) {
				t.Fatalf("decodeEntry(%x): %v", raw, err)
			}
		}
	})
}
