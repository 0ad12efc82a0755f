// Package linproc checks that histories of event and lock operations made
// by several processes at once against one shared backend are linearizable
// (internal/lincheck's models, checked with porcupine).
//
// The tests re-execute the test binary as child processes, which TestMain
// turns into workers instead of running tests (see child). It is a package
// of its own, beside internal/crosstest, because its test binary imports
// every shared backend and the server, which the conformance suite
// (statetest, imported by each backend's tests) must not.
package linproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/internal/lincheck"
)

// The environment of a child process.
const (
	envChild      = "BOTSTATE_LINPROC_CHILD"      // "worker" makes the binary a child
	envURL        = "BOTSTATE_LINPROC_URL"        // the backend's URL
	envNamespace  = "BOTSTATE_LINPROC_NAMESPACE"  // the run's namespace
	envProcess    = "BOTSTATE_LINPROC_PROCESS"    // this child's number, from 0
	envGoroutines = "BOTSTATE_LINPROC_GOROUTINES" // workers in this child
	envOps        = "BOTSTATE_LINPROC_OPS"        // operations per worker
	envSeed       = "BOTSTATE_LINPROC_SEED"       // the run's random seed
	envOut        = "BOTSTATE_LINPROC_OUT"        // where to write the history
	envBroken     = "BOTSTATE_LINPROC_BROKEN"     // "1": break the driver (brokenDriver)
)

func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "":
		goleak.VerifyTestMain(m,
			// rueidis's cluster client, after a topology refresh that drops
			// connections, closes them five seconds later in a goroutine of
			// its own that nothing can stop, even once the client is closed.
			goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		)
	case "worker":
		if err := child(); err != nil {
			fmt.Fprintln(os.Stderr, "linproc child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envChild, os.Getenv(envChild))
		os.Exit(2)
	}
}

// record is one line of a child's history: an operation on an event or a
// lock, with its client (worker) and its call and return times.
type record struct {
	Client   int                   `json:"client"`
	Call     int64                 `json:"call"`
	Return   int64                 `json:"return"`
	EventIn  *lincheck.EventInput  `json:"event_in,omitempty"`
	EventOut *lincheck.EventOutput `json:"event_out,omitempty"`
	LockIn   *lincheck.LockInput   `json:"lock_in,omitempty"`
	LockOut  *lincheck.LockOutput  `json:"lock_out,omitempty"`
}

func envInt(name string) (int, error) {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return n, nil
}

// child opens the backend, prints "ready", waits for a line on stdin, runs
// its workers and writes their history as JSON lines to $envOut.
//
// Times are the wall clock in nanoseconds, read once at the start and
// advanced by the monotonic clock: every process on the machine reads the
// same wall clock, so the times of all children compare (porcupine needs
// that an operation that returned before another was called has the
// earlier time), and a step of the wall clock during the run moves none.
func child() error {
	proc, err := envInt(envProcess)
	if err != nil {
		return err
	}
	goroutines, err := envInt(envGoroutines)
	if err != nil {
		return err
	}
	ops, err := envInt(envOps)
	if err != nil {
		return err
	}
	seed, err := envInt(envSeed)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := botstate.Open(ctx, os.Getenv(envURL), botstate.WithMaxAttempts(maxAttempts))
	if err != nil {
		return err
	}
	if os.Getenv(envBroken) == "1" {
		st, err = botstate.OpenDriver(brokenDriver{st.Driver()}, botstate.WithMaxAttempts(maxAttempts))
		if err != nil {
			return err
		}
	}
	defer st.Close()
	st = st.Namespace(os.Getenv(envNamespace))

	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the start: %w", err)
	}
	base := time.Now()
	wall := base.UnixNano()
	rec := &lincheck.Recorder{Now: func() int64 { return wall + int64(time.Since(base)) }}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() { newWorker(st, rec, proc*goroutines+g, uint64(seed)).run(ops) })
	}
	wg.Wait()

	f, err := os.Create(os.Getenv(envOut))
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, op := range rec.Operations() {
		r := record{Client: op.ClientId, Call: op.Call, Return: op.Return}
		switch in := op.Input.(type) {
		case lincheck.EventInput:
			out := op.Output.(lincheck.EventOutput)
			r.EventIn, r.EventOut = &in, &out
		case lincheck.LockInput:
			out := op.Output.(lincheck.LockOutput)
			r.LockIn, r.LockOut = &in, &out
		}
		if err := enc.Encode(r); err != nil {
			f.Close()
			return err
		}
	}
	return errors.Join(w.Flush(), f.Close())
}

// brokenDriver breaks the contract the way a buggy backend could, for the
// test that the check catches it: Complete with a token that does not hold
// the claim reports success (changing nothing), and an Acquire with Reject
// on a held lock reports the lock acquired (with a made-up token) while
// another holds it.
type brokenDriver struct{ driver.Driver }

func (b brokenDriver) CompleteEvent(ctx context.Context, ns, key, token string, result []byte, now, expiresAt time.Time) error {
	err := b.Driver.CompleteEvent(ctx, ns, key, token, result, now, expiresAt)
	if errors.Is(err, driver.ErrNotOwner) {
		return nil
	}
	return err
}

func (b brokenDriver) Acquire(ctx context.Context, ns string, r driver.AcquireRequest) (driver.AcquireReply, error) {
	rep, err := b.Driver.Acquire(ctx, ns, r)
	if err == nil && rep.Outcome == driver.Busy && r.Strategy == driver.Reject {
		token := uint64(r.Now.UnixMicro())
		rep = driver.AcquireReply{Outcome: driver.Acquired, Holder: driver.Holder{Owner: r.Owner, Token: token, AcquiredAt: r.Now, ExpiresAt: r.ExpiresAt}}
	}
	return rep, err
}
