package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/botstate/botstate"
)

const benchUsage = `usage: botstate bench [-c N] [-d DURATION] [-ops LIST] [-ns NS] [-json] URL

Measures a backend through the public API: for each operation, N workers call
it for DURATION, and the table gives calls per second and the p50, p90 and p99
latency (HdrHistogram, microsecond resolution). It writes only in namespace
NS, and everything it writes expires within ten minutes.

Operations: record (Events.Record), claim (Claim then Complete), lock (Acquire
then Handover), update (Conversations.UpdateData), merge (ThreadState.Merge),
append (Cache.Append, keeping 20).

flags:
`

// benchOps are the operations bench knows, in the order it runs them.
var benchOps = []string{"record", "claim", "lock", "update", "merge", "append"}

// benchConfig is what the bench flags say.
type benchConfig struct {
	url, ns     string
	workers     int
	duration    time.Duration
	ops         []string
	jsonOut     bool
	keyTTL      time.Duration
	payloadSize int
}

// benchResult is one operation's figures, as --json prints them.
type benchResult struct {
	Op        string  `json:"op"`
	Calls     int64   `json:"calls"`
	Errors    int64   `json:"errors"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50us     int64   `json:"p50_us"`
	P90us     int64   `json:"p90_us"`
	P99us     int64   `json:"p99_us"`
	MaxUs     int64   `json:"max_us"`
	FirstErr  string  `json:"first_error,omitempty"`
}

func parseBench(fs *flags, args []string, stdout, stderr io.Writer) (*benchConfig, error) {
	c := &benchConfig{keyTTL: 10 * time.Minute, payloadSize: 64}
	fs.StringVar(&c.url, "url", "", "backend URL (or give it as the argument)")
	fs.StringVar(&c.ns, "ns", "botstate-bench", "namespace to write in")
	fs.IntVar(&c.workers, "c", 16, "concurrent workers per operation")
	fs.DurationVar(&c.duration, "d", 5*time.Second, "how long each operation runs")
	ops := fs.String("ops", strings.Join(benchOps, ","), "operations to run, comma-separated")
	fs.BoolVar(&c.jsonOut, "json", false, "print JSON instead of a table")
	bad := func(format string, a ...any) (*benchConfig, error) {
		fs.printUsage(stderr)
		return nil, fmt.Errorf("%w: bench: %s", errUsage, fmt.Sprintf(format, a...))
	}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.printUsage(stdout)
		fs.help = true
		return nil, nil
	case err != nil:
		return bad("%v", err)
	case fs.NArg() > 1:
		return bad("unexpected argument %q", fs.Arg(1))
	case fs.NArg() == 1 && c.url != "":
		return bad("the URL is given twice, as -url and as %q", fs.Arg(0))
	case fs.NArg() == 1:
		c.url = fs.Arg(0)
	}
	switch {
	case c.url == "":
		return bad("a backend URL is required (bench writes to it)")
	case c.workers < 1 || c.workers > 4096:
		return bad("-c %d: want 1 to 4096 workers", c.workers)
	case c.duration <= 0 || c.duration > time.Hour:
		return bad("-d %v: want a duration up to an hour", c.duration)
	}
	if err := botstate.ValidNamespace(c.ns); err != nil {
		return bad("-ns: %v", err)
	}
	for _, op := range strings.Split(*ops, ",") {
		op = strings.TrimSpace(op)
		if !slices.Contains(benchOps, op) {
			return bad("unknown operation %q (known: %s)", op, strings.Join(benchOps, ", "))
		}
		if !slices.Contains(c.ops, op) {
			c.ops = append(c.ops, op)
		}
	}
	return c, nil
}

func bench(ctx context.Context, c *benchConfig, stdout, stderr io.Writer) error {
	// Everything it writes expires within ten minutes.
	st, err := botstate.Open(ctx, c.url, botstate.WithEventWindow(c.keyTTL), botstate.WithConversationTTL(c.keyTTL))
	if err != nil {
		return fmt.Errorf("open %s: %w", c.url, err)
	}
	defer st.Close()
	ns := st.Namespace(c.ns)
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	var results []benchResult
	for _, op := range c.ops {
		if !c.jsonOut {
			fmt.Fprintf(stderr, "bench: %s for %v with %d workers ...\n", op, c.duration, c.workers)
		}
		r, err := benchOp(ctx, ns, c, op, run)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	if c.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "operation\tops/s\tp50\tp90\tp99\tmax\terrors\t\n")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%d\t\n", r.Op, r.OpsPerSec, us(r.P50us), us(r.P90us), us(r.P99us), us(r.MaxUs), r.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		if r.FirstErr != "" {
			fmt.Fprintf(stdout, "%s: first error: %s\n", r.Op, r.FirstErr)
		}
	}
	return nil
}

// us prints a latency in microseconds the way people read it.
func us(v int64) string {
	switch {
	case v >= 10_000:
		return fmt.Sprintf("%.1f ms", float64(v)/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2f ms", float64(v)/1000)
	}
	return fmt.Sprintf("%d µs", v)
}

// benchOp runs one operation with c.workers workers for c.duration.
func benchOp(ctx context.Context, ns *botstate.Store, c *benchConfig, op, run string) (benchResult, error) {
	payload := make([]byte, c.payloadSize)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	call := benchCall(ns, c, op, payload)
	var (
		mu       sync.Mutex
		total    = hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
		calls    atomic.Int64
		errs     atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	rctx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	start := time.Now()
	for w := range c.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
			prefix := fmt.Sprintf("%s-%s-%d-", op, run, w)
			for i := 0; rctx.Err() == nil; i++ {
				t0 := time.Now()
				// Each call gets the parent context: a call in flight when
				// the duration ends finishes and counts.
				err := call(ctx, prefix, i)
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				calls.Add(1)
				_ = h.RecordValue(max(1, d.Microseconds()))
			}
			mu.Lock()
			total.Merge(h)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return benchResult{}, err
	}
	r := benchResult{Op: op, Calls: calls.Load(), Errors: errs.Load(),
		OpsPerSec: float64(calls.Load()) / elapsed.Seconds(),
		P50us:     total.ValueAtQuantile(50), P90us: total.ValueAtQuantile(90),
		P99us: total.ValueAtQuantile(99), MaxUs: total.Max()}
	if s, ok := firstErr.Load().(string); ok {
		r.FirstErr = s
	}
	return r, nil
}

// benchCall returns the call bench measures for op: the i-th call of the
// worker whose keys start with prefix.
func benchCall(ns *botstate.Store, c *benchConfig, op string, payload []byte) func(ctx context.Context, prefix string, i int) error {
	ttl := c.keyTTL
	switch op {
	case "record":
		ev := ns.Events()
		return func(ctx context.Context, prefix string, i int) error {
			_, err := ev.Record(ctx, prefix+strconv.Itoa(i), payload)
			return err
		}
	case "claim":
		ev := ns.Events()
		return func(ctx context.Context, prefix string, i int) error {
			cl, err := ev.Claim(ctx, prefix+strconv.Itoa(i), payload, time.Minute)
			if err != nil {
				return err
			}
			if cl.Status != botstate.Claimed {
				return fmt.Errorf("claim of a new key answered %v", cl.Status)
			}
			return ev.Complete(ctx, cl.Token, nil)
		}
	case "lock":
		lk := ns.Locks()
		policy := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Minute, QueueMax: 10}
		return func(ctx context.Context, prefix string, i int) error {
			r, err := lk.Acquire(ctx, prefix+strconv.Itoa(i%64), "bench", payload, policy)
			if err != nil {
				return err
			}
			if r.Status != botstate.Acquired {
				return fmt.Errorf("a worker's own lock answered %v", r.Status)
			}
			h, err := lk.Handover(ctx, r.Lock, time.Minute)
			if err == nil && h.Held {
				err = fmt.Errorf("a lock nobody queued on was handed over")
			}
			return err
		}
	case "update":
		cv := ns.Conversations()
		return func(ctx context.Context, prefix string, i int) error {
			_, err := cv.UpdateData(ctx, prefix+strconv.Itoa(i%64), map[string]any{"n": i, "text": string(payload)})
			return err
		}
	case "merge":
		ts := ns.ThreadState()
		return func(ctx context.Context, prefix string, i int) error {
			_, err := ts.Merge(ctx, prefix+strconv.Itoa(i%64), map[string]any{"k" + strconv.Itoa(i%8): i}, ttl)
			return err
		}
	default: // append
		cache := ns.Cache()
		return func(ctx context.Context, prefix string, i int) error {
			_, err := cache.Append(ctx, prefix+strconv.Itoa(i%64), payload, 20, ttl)
			return err
		}
	}
}
