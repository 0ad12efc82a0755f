package server_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/botstate/botstate/internal/wire"
	"github.com/botstate/botstate/server"
)

// problemStatus is the status each problem code an operation may answer
// goes with.
var problemStatus = map[string]int{
	wire.CodeInvalid: 400, wire.CodeInvalidTransition: 400, wire.CodeMalformed: 400,
	wire.CodeNotFound: 404, wire.CodeConflict: 409, wire.CodeNotOwner: 409,
	wire.CodeTooLarge: 413, wire.CodeBodyTooLarge: 413,
}

// FuzzAPI sends any body to any operation with the token of namespace a,
// both namespaces holding one item of each kind: the server never panics,
// answers 5xx to nothing (the mem backend cannot fail), answers every
// refusal with a problem document whose code goes with its status, answers
// every success with JSON, changes nothing when it refuses, and never
// changes namespace b.
//
//	go test -run '^$' -fuzz FuzzAPI -fuzztime 60s ./server/
func FuzzAPI(f *testing.F) {
	// An input names its operation by its index among the sorted names
	// (seeds under testdata/fuzz/FuzzAPI too): a new operation shifts what
	// some of them exercise, and nothing else.
	var ops []string
	reqs := samples(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	for name := range reqs {
		ops = append(ops, name)
	}
	sort.Strings(ops)
	for i, name := range ops {
		b, _ := json.Marshal(reqs[name])
		f.Add(uint8(i), b)
	}
	index := func(name string) uint8 {
		return uint8(sort.SearchStrings(ops, name))
	}
	f.Add(index("events/claim"), []byte(`{"key":"k","token":"t","lease_until":"2026-01-01T00:00:00Z","now":"2025-12-31T00:00:00Z"}`))
	f.Add(index("locks/acquire"), []byte(`{"key":"k","owner":"o","strategy":"debounce","expires_at":"0001-01-01T00:00:00Z"}`))
	f.Add(index("snapshot/import"), []byte(`{"format":"botstate-snapshot","version":1}`+"\n"+`{"ns":"b","kind":"cache","key":"x","value":"eA=="}`+"\n"))
	f.Add(index("conversations/merge-data"), []byte(`{"key":"c","data":{"a":{"b":[1,2,{"c":null}]}}}`))

	fx := newFixture(f, server.Config{MaxBody: 1 << 16, MaxValueSize: 1 << 12})
	fx.populate("a", "token-of-a")
	fx.populate("b", "token-of-b")
	export := func(ns string) string {
		req := httptest.NewRequest("POST", "/v1/ns/"+ns+"/snapshot/export", nil)
		req.Header.Set("Authorization", "Bearer the-admin-token")
		out := httptest.NewRecorder()
		fx.srv.ServeHTTP(out, req)
		if out.Code != 200 {
			f.Fatalf("export %s: %d %s", ns, out.Code, out.Body)
		}
		return out.Body.String()
	}
	beforeB := export("b")
	f.Fuzz(func(t *testing.T, i uint8, body []byte) {
		op := ops[int(i)%len(ops)]
		beforeA := export("a")
		req := httptest.NewRequest("POST", "/v1/ns/a/"+op, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer token-of-a")
		rec := httptest.NewRecorder()
		fx.srv.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: %d %s", op, body, rec.Code, rec.Body)
		}
		if rec.Code != 200 {
			var p wire.Problem
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("%s %q: %d with Content-Type %q", op, body, rec.Code, ct)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != rec.Code || p.Type != wire.ProblemType(p.Code) ||
				problemStatus[p.Code] != rec.Code {
				t.Fatalf("%s %q: %d: not a problem document for its status: %s", op, body, rec.Code, rec.Body)
			}
			if after := export("a"); after != beforeA {
				t.Fatalf("%s %q was refused (%s) and changed namespace a:\n%s\n---\n%s", op, body, p.Code, beforeA, after)
			}
		} else if ct := rec.Header().Get("Content-Type"); strings.HasPrefix(ct, "application/json") && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %q: 200 with a body that is not JSON: %s", op, body, rec.Body)
		}
		if after := export("b"); after != beforeB {
			t.Fatalf("%s %q changed namespace b:\n%s\n---\n%s", op, body, beforeB, after)
		}
	})
}
