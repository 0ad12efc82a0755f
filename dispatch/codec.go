package dispatch

import (
	"encoding/binary"
	"errors"
)

// The dispatcher keeps two small records in the store, each in a compact
// binary form that starts with a version byte:
//
//   - an event's payload (the envelope): the route, the scope and the
//     message payload, so the re-driver can dispatch an event again from the
//     store alone;
//   - a lock entry: the event key, the claim token the enqueuer held, and the
//     message payload, so the worker that takes the entry needs no read.

const codecVersion = 1

var errCodec = errors.New("dispatch: not a dispatcher record")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func readString(b []byte) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return "", nil, errCodec
	}
	return string(b[k : k+int(n)]), b[k+int(n):], nil
}

// Both records are two strings and a payload.
func encode3(a, b string, payload []byte) []byte {
	out := make([]byte, 0, 1+len(a)+len(b)+len(payload)+4)
	out = append(out, codecVersion)
	out = appendString(out, a)
	out = appendString(out, b)
	return append(out, payload...)
}

func decode3(in []byte) (a, b string, payload []byte, err error) {
	if len(in) == 0 || in[0] != codecVersion {
		return "", "", nil, errCodec
	}
	if a, in, err = readString(in[1:]); err != nil {
		return "", "", nil, err
	}
	if b, in, err = readString(in); err != nil {
		return "", "", nil, err
	}
	return a, b, in, nil
}

// envelope is an event's stored payload.
type envelope struct {
	route, scope string
	payload      []byte
}

func (e *envelope) encode() []byte { return encode3(e.route, e.scope, e.payload) }

func decodeEnvelope(b []byte) (envelope, error) {
	route, scope, payload, err := decode3(b)
	return envelope{route: route, scope: scope, payload: payload}, err
}

// entry is a lock entry: a message waiting for, or being handled under, its
// scope's lock.
type entry struct {
	key, token string
	payload    []byte
}

func (e *entry) encode() []byte { return encode3(e.key, e.token, e.payload) }

func decodeEntry(b []byte) (entry, error) {
	key, token, payload, err := decode3(b)
	if err == nil && key == "" {
		err = errCodec
	}
	return entry{key: key, token: token, payload: payload}, err
}
