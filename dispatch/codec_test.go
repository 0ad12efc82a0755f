package dispatch

import (
	"bytes"
	"testing"
)

// FuzzCodec checks that the dispatcher's records round-trip and that no
// input, however malformed (a store shared with other code holds anything),
// makes the decoders panic.
func FuzzCodec(f *testing.F) {
	f.Add("route", "thread-1", []byte("payload"))
	f.Add("", "", []byte{})
	f.Add("r", "a\x00b", []byte{0xff, 0x01})
	f.Fuzz(func(t *testing.T, a, b string, payload []byte) {
		env := envelope{route: a, scope: b, payload: payload}
		got, err := decodeEnvelope(env.encode())
		if err != nil || got.route != a || got.scope != b || !bytes.Equal(got.payload, payload) {
			t.Fatalf("envelope round trip: %+v, %v", got, err)
		}
		e := entry{key: a, token: b, payload: payload}
		ge, err := decodeEntry(e.encode())
		if a != "" && (err != nil || ge.key != a || ge.token != b || !bytes.Equal(ge.payload, payload)) {
			t.Fatalf("entry round trip: %+v, %v", ge, err)
		}
		if a == "" && err == nil {
			t.Fatal("an entry without a key decoded")
		}
		// Raw bytes as a record: an error or a value, never a panic.
		_, _ = decodeEnvelope(payload)
		_, _ = decodeEntry(payload)
		_, _ = decodeEnvelope(append([]byte{codecVersion}, payload...))
		_, _ = decodeEntry(append([]byte{codecVersion}, payload...))
	})
}
