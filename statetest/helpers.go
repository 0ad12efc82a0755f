package statetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
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
