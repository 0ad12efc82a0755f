package server_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/botstate/botstate/internal/wire"
	"github.com/botstate/botstate/server"
)

// FuzzAPI sends any body to any operation with the token of namespace a:
// the server never panics, answers 5xx to nothing (the mem backend cannot
// fail), answers every refusal with a problem document, and never changes
// namespace b.
//
//	go test -run '^$' -fuzz FuzzAPI -fuzztime 60s ./server/
func FuzzAPI(f *testing.F) {
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
	fx.populate("b", "token-of-b")
	before := fx.snapshot("b")
	f.Fuzz(func(t *testing.T, i uint8, body []byte) {
		op := ops[int(i)%len(ops)]
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
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Code == "" || p.Status != rec.Code {
				t.Fatalf("%s %q: %d: not a problem document: %s", op, body, rec.Code, rec.Body)
			}
		}
		exp := httptest.NewRequest("POST", "/v1/ns/b/snapshot/export", nil)
		exp.Header.Set("Authorization", "Bearer the-admin-token")
		out := httptest.NewRecorder()
		fx.srv.ServeHTTP(out, exp)
		if after := out.Body.String(); out.Code != 200 || after != before {
			t.Fatalf("%s %q changed namespace b:\n%s\n---\n%s", op, body, before, after)
		}
	})
}
