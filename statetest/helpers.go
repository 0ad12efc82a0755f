package statetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ok(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: unexpected error: %v", fmt.Sprintf(what, args...), err)
	}
}

func isErr(t testing.TB, err, target error, what string, args ...any) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one matching %v", fmt.Sprintf(what, args...), err, target)
	}
}

func eq[T any](t testing.TB, got, want T, what string, args ...any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %#v, want %#v", fmt.Sprintf(what, args...), got, want)
	}
}

func eqBytes(t testing.TB, got, want []byte, what string, args ...any) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", fmt.Sprintf(what, args...), got, want)
	}
}

func truth(t testing.TB, cond bool, what string, args ...any) {
	t.Helper()
	if !cond {
		t.Fatalf(what, args...)
	}
}

func add(name string, cases ...testCase) {
	groups = append(groups, group{name: name, cases: cases})
}

// tc builds a test case whose body gets a fresh env.
func tc(name string, fn func(e *env)) testCase {
	return testCase{name: name, fn: func(t *testing.T, open Opener) { fn(newEnv(t, open)) }}
}

// tco builds a test case that opens its env with options.
func tco(name string, opts []botstate.Option, fn func(e *env)) testCase {
	return testCase{name: name, fn: func(t *testing.T, open Opener) { fn(newEnv(t, open, opts...)) }}
}

// race runs fn(i) in n goroutines started together and waits for them.
func race(n int, fn func(i int)) {
	var start, done sync.WaitGroup
	start.Add(1)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			start.Wait()
			fn(i)
		}()
	}
	start.Done()
	done.Wait()
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// mergeLimit is the value size limit of the merge limit tests.
const mergeLimit = 400

var mergeLimitOpts = []botstate.Option{botstate.WithMaxValueSize(mergeLimit)}

// storedSize is what a size limit counts for data: its JSON as stored,
// compact, keys sorted, with <, > and & as themselves.
func storedSize(t testing.TB, data map[string]any) int {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(data); err != nil {
		t.Fatalf("encode %v: %v", data, err)
	}
	return b.Len() - 1 // Encode's newline
}

// union is a merge's result: a's members, replaced and joined by b's.
func union(a, b map[string]any) map[string]any {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]any{}
	}
	maps.Copy(out, b)
	return out
}

// bigMember is one member of 157 bytes: two of them fit in mergeLimit,
// three do not.
func bigMember(name string) map[string]any {
	return map[string]any{name: strings.Repeat(name, 150)}
}

// trickyData is data whose size as stored depends on every rule of the
// encoding: names and strings that need escapes (quotes, backslashes,
// control characters, U+2028 and U+2029), characters written as
// themselves (<, >, &, DEL, non-ASCII), empty and nested objects and
// arrays, numbers; the second holds what PostgreSQL's jsonb cannot keep
// as written (NUL, an exponent) and a NUL in a name.
func trickyData() []map[string]any {
	return []map[string]any{{
		"quote\"back\\slash":    "<a href=\"x\">&amp;</a>",
		"ctl\x01\x1f\b\f\n\r\t": "\x7f\u00e9\U0001F600",
		"line\u2028para\u2029":  "\u2028\u2029",
		"nested":                map[string]any{"z": []any{1.5, -2.0, true, false, nil, map[string]any{}, []any{}, ""}, "a": map[string]any{"\u00e9": "\u00fc"}},
		"":                      0.0,
	}, {
		"big":      1e21,
		"nul\x00":  "a\x00b",
		"<>&":      "&",
		"negative": -0.25,
	}}
}

// padTo returns a patch of one member, "pad", whose merge into data gives
// data of exactly size bytes as stored.
func padTo(t testing.TB, data map[string]any, size int) map[string]any {
	t.Helper()
	n := size - storedSize(t, union(data, map[string]any{"pad": ""}))
	if n < 0 {
		t.Fatalf("the test's premise: data of %d bytes does not leave room for a pad in %d", storedSize(t, data), size)
	}
	patch := map[string]any{"pad": strings.Repeat("x", n)}
	if got := storedSize(t, union(data, patch)); got != size {
		t.Fatalf("the test's premise: padded to %d bytes, want %d", got, size)
	}
	return patch
}

// concurrentMergers merge concurrentMember(i) into one item at once.
const concurrentMergers = 8

// concurrentMember is worker i's member: 98 bytes, so that four fit in
// mergeLimit and five do not.
func concurrentMember(i int) map[string]any {
	return map[string]any{fmt.Sprintf("w%d", i): strings.Repeat("x", 90)}
}

// concurrentFit is how many concurrentMembers fit in mergeLimit together.
const concurrentFit = 4

// raceMergesAtTheLimit runs concurrentMergers merges of one member each at
// once through merge and requires exactly concurrentFit of them to succeed
// and the others to be refused with ErrTooLarge.
func raceMergesAtTheLimit(e *env, merge func(ctx context.Context, patch map[string]any) error) {
	ctx := ctxT(e.t)
	var won, refused atomic.Int32
	race(concurrentMergers, func(i int) {
		err := merge(ctx, concurrentMember(i))
		switch {
		case err == nil:
			won.Add(1)
		case botstateIs(err, botstate.ErrTooLarge):
			refused.Add(1)
		default:
			e.t.Errorf("merge %d: %v", i, err)
		}
	})
	eq(e.t, won.Load(), int32(concurrentFit), "merges that succeeded")
	eq(e.t, refused.Load(), int32(concurrentMergers-concurrentFit), "merges refused as too large")
}
