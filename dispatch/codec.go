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

// envelope is an event's stored payload.
type envelope struct {
	route, scope string
	payload      []byte
}

func (e *envelope) encode() []byte {
	b := make([]byte, 0, 1+len(e.route)+len(e.scope)+len(e.payload)+4)
	b = append(b, codecVersion)
	b = appendString(b, e.route)
	b = appendString(b, e.scope)
	return append(b, e.payload...)
}

func decodeEnvelope(b []byte) (envelope, error) {
	if len(b) == 0 || b[0] != codecVersion {
		return envelope{}, errCodec
	}
	route, rest, err := readString(b[1:])
	if err != nil {
		return envelope{}, err
	}
	scope, rest, err := readString(rest)
	if err != nil {
		return envelope{}, err
	}
	return envelope{route: route, scope: scope, payload: rest}, nil
}

// entry is a lock entry: a message waiting for, or being handled under, its
// scope's lock.
type entry struct {
	key, token string
	payload    []byte
}

func (e *entry) encode() []byte {
	b := make([]byte, 0, 1+len(e.key)+len(e.token)+len(e.payload)+4)
	b = append(b, codecVersion)
	b = appendString(b, e.key)
	b = appendString(b, e.token)
	return append(b, e.payload...)
}

func decodeEntry(b []byte) (entry, error) {
	if len(b) == 0 || b[0] != codecVersion {
		return entry{}, errCodec
	}
	key, rest, err := readString(b[1:])
	if err != nil || key == "" {
		return entry{}, errCodec
	}
	token, rest, err := readString(rest)
	if err != nil {
		return entry{}, err
	}
	return entry{key: key, token: token, payload: rest}, nil
}
