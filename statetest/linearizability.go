package statetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/botstate/botstate"
)

// Histories of concurrent operations are recorded from the real backend and
// checked against a sequential model of the domain with porcupine: every
// history must be explainable by some order of the operations that respects
// real time. The fake clock stands still, so leases never lapse here.

// recorder collects porcupine operations from several goroutines.
type recorder struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

func (r *recorder) do(client int, in any, fn func() any) any {
	call := time.Since(r.start).Nanoseconds()
	out := fn()
	ret := time.Since(r.start).Nanoseconds()
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	r.mu.Unlock()
	return out
}

func partitionByKey(key func(in any) string) func([]porcupine.Operation) [][]porcupine.Operation {
	return func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range h {
			k := key(op.Input)
			if _, seen := byKey[k]; !seen {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, k := range order {
			out = append(out, byKey[k])
		}
		return out
	}
}

func check(e *env, model porcupine.Model, ops []porcupine.Operation) {
	e.t.Helper()
	res := porcupine.CheckOperationsTimeout(model, ops, 30*time.Second)
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		e.t.Logf("linearizability check timed out on %d operations; no verdict", len(ops))
	default:
		var b strings.Builder
		for _, op := range ops {
			fmt.Fprintf(&b, "  client %d [%d,%d] %s\n", op.ClientId, op.Call, op.Return, model.DescribeOperation(op.Input, op.Output))
		}
		e.t.Fatalf("history is not linearizable:\n%s", b.String())
	}
}

// ---- events ----

type evIn struct {
	key    string
	op     string // claim, complete, release
	token  string
	result string
}

type evOut struct {
	status botstate.ClaimStatus
	token  string
	result string
	err    string // "", "not_owner", or another error
}

type evState struct {
	status string // "", claimed, released, completed
	token  string
	result string
}

func errName(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, botstate.ErrNotOwner):
		return "not_owner"
	}
	return err.Error()
}

var eventModel = porcupine.Model{
	Partition: partitionByKey(func(in any) string { return in.(evIn).key }),
	Init:      func() any { return evState{} },
	Step: func(st, in, out any) (bool, any) {
		s, i, o := st.(evState), in.(evIn), out.(evOut)
		switch i.op {
		case "claim":
			switch s.status {
			case "", "released":
				return o.err == "" && o.status == botstate.Claimed, evState{status: "claimed", token: o.token}
			case "claimed":
				return o.err == "" && o.status == botstate.InProgress, s
			default:
				return o.err == "" && o.status == botstate.Completed && o.result == s.result, s
			}
		case "complete", "release":
			if s.status != "claimed" || s.token != i.token {
				return o.err == "not_owner", s
			}
			if o.err != "" {
				return false, s
			}
			if i.op == "complete" {
				return true, evState{status: "completed", result: i.result}
			}
			return true, evState{status: "released"}
		}
		return false, s
	},
	DescribeOperation: func(in, out any) string {
		i, o := in.(evIn), out.(evOut)
		return fmt.Sprintf("%s(%s, token %q) -> %v %q %q %s", i.op, i.key, i.token, o.status, o.token, o.result, o.err)
	},
}

// ---- locks ----

type lkIn struct {
	key   string
	op    string // acquire, release, handover
	entry string
	token uint64
}

type lkOut struct {
	status  botstate.AcquireStatus
	token   uint64
	held    bool
	next    string
	pending string // released entries, joined by ","
	err     string
}

type lkState struct {
	holder  uint64
	fence   uint64
	pending string // entries joined by ","
}

func joinEntries(es []botstate.Entry) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = string(e.Payload)
	}
	return strings.Join(parts, ",")
}

var lockModel = porcupine.Model{
	Partition: partitionByKey(func(in any) string { return in.(lkIn).key }),
	Init:      func() any { return lkState{} },
	Step: func(st, in, out any) (bool, any) {
		s, i, o := st.(lkState), in.(lkIn), out.(lkOut)
		if o.err != "" && o.err != "not_owner" {
			return false, s
		}
		switch i.op {
		case "acquire":
			if s.holder == 0 {
				ok := o.err == "" && o.status == botstate.Acquired && o.token > s.fence
				return ok, lkState{holder: o.token, fence: o.token, pending: s.pending}
			}
			next := s
			if next.pending == "" {
				next.pending = i.entry
			} else {
				next.pending += "," + i.entry
			}
			return o.err == "" && o.status == botstate.Queued, next
		case "release":
			if s.holder != i.token || s.holder == 0 {
				return o.err == "not_owner", s
			}
			return o.err == "" && o.pending == s.pending, lkState{fence: s.fence}
		case "handover":
			if s.holder != i.token || s.holder == 0 {
				return o.err == "not_owner", s
			}
			if s.pending == "" {
				return o.err == "" && !o.held, lkState{fence: s.fence}
			}
			first, rest, _ := strings.Cut(s.pending, ",")
			return o.err == "" && o.held && o.next == first, lkState{holder: s.holder, fence: s.fence, pending: rest}
		}
		return false, s
	},
	DescribeOperation: func(in, out any) string {
		i, o := in.(lkIn), out.(lkOut)
		return fmt.Sprintf("%s(%s, %q, %d) -> status %v token %d held %v next %q pending %q %s", i.op, i.key, i.entry, i.token, o.status, o.token, o.held, o.next, o.pending, o.err)
	},
}

func init() {
	add("Linearizability",
		// No attempt limit: the model is the claim protocol alone.
		tco("EventHistoriesAreLinearizable", []botstate.Option{botstate.WithMaxAttempts(0)}, testLinearizabilityEventHistoriesAreLinearizable),
		tc("LockHistoriesAreLinearizable", testLinearizabilityLockHistoriesAreLinearizable),
	)
}

func testLinearizabilityEventHistoriesAreLinearizable(e *env) {
	ctx, ev := ctxT(e.t), e.st.Events()
	rec := &recorder{start: time.Now()}
	race(6, func(client int) {
		rng := rand.New(rand.NewPCG(uint64(client), 7))
		var stale []botstate.EventToken
		for j := 0; j < 25; j++ {
			key := fmt.Sprintf("k%d", rng.IntN(3))
			out := rec.do(client, evIn{key: key, op: "claim"}, func() any {
				c, err := ev.Claim(ctx, key, nil, time.Hour)
				return evOut{status: c.Status, token: c.Token.ID, result: string(c.Result), err: errName(err)}
			}).(evOut)
			tok := botstate.EventToken{Key: key, ID: out.token}
			if out.status != botstate.Claimed {
				if len(stale) == 0 || rng.IntN(3) > 0 {
					continue
				}
				tok = stale[rng.IntN(len(stale))] // a worker that lost its claim
			}
			stale = append(stale, tok)
			op, result := "release", ""
			if rng.IntN(4) == 0 {
				op, result = "complete", fmt.Sprintf("r%d-%d", client, j)
			}
			rec.do(client, evIn{key: tok.Key, op: op, token: tok.ID, result: result}, func() any {
				var err error
				if op == "complete" {
					err = ev.Complete(ctx, tok, []byte(result))
				} else {
					err = ev.Release(ctx, tok)
				}
				return evOut{err: errName(err)}
			})
		}
	})
	check(e, eventModel, rec.ops)
}

func testLinearizabilityLockHistoriesAreLinearizable(e *env) {
	ctx, l := ctxT(e.t), e.st.Locks()
	p := botstate.LockPolicy{Strategy: botstate.Queue, TTL: time.Hour}
	rec := &recorder{start: time.Now()}
	race(5, func(client int) {
		rng := rand.New(rand.NewPCG(uint64(client), 11))
		for j := 0; j < 15; j++ {
			key := fmt.Sprintf("L%d", rng.IntN(2))
			entry := fmt.Sprintf("e%d.%d", client, j)
			out := rec.do(client, lkIn{key: key, op: "acquire", entry: entry}, func() any {
				r, err := l.Acquire(ctx, key, fmt.Sprintf("c%d", client), []byte(entry), p)
				return lkOut{status: r.Status, token: r.Lock.Token, err: errName(err)}
			}).(lkOut)
			if out.status != botstate.Acquired {
				continue
			}
			lk := botstate.Lock{Key: key, Token: out.token}
			for held := true; held; {
				if rng.IntN(3) == 0 {
					rec.do(client, lkIn{key: key, op: "release", token: lk.Token}, func() any {
						es, err := l.Release(ctx, lk)
						return lkOut{pending: joinEntries(es), err: errName(err)}
					})
					break
				}
				o := rec.do(client, lkIn{key: key, op: "handover", token: lk.Token}, func() any {
					h, err := l.Handover(ctx, lk, time.Hour)
					o := lkOut{held: h.Held, err: errName(err)}
					if h.Next != nil {
						o.next = string(h.Next.Payload)
					}
					return o
				}).(lkOut)
				held = o.held
			}
		}
	})
	check(e, lockModel, rec.ops)
}
