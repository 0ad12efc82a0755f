package lincheck

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
)

// Lock operations, as LockInput.Op names them.
const (
	LockAcquire      = "acquire"       // Locks.Acquire(Key, Owner, Entry, policy)
	LockTakeOver     = "takeover"      // Locks.TakeOver(Key, Owner)
	LockExtend       = "extend"        // Locks.Extend({Key, Token})
	LockRelease      = "release"       // Locks.Release({Key, Token})
	LockAbandon      = "abandon"       // Locks.Abandon({Key, Token})
	LockHandover     = "handover"      // Locks.Handover({Key, Token})
	LockNext         = "next"          // Locks.Next({Key, Token})
	LockForceRelease = "force_release" // Locks.ForceRelease(Key)
	LockInspect      = "inspect"       // Locks.Inspect(Key)
)

// LockInput is one call on one lock key. Strategy (reject, queue, debounce,
// concurrent), QueueMax, DropNewest, MaxHolders and QueueWhenFull are the
// LockPolicy of an Acquire.
type LockInput struct {
	Op            string `json:"op"`
	Key           string `json:"key"`
	Owner         string `json:"owner,omitempty"`
	Entry         string `json:"entry,omitempty"`
	Token         uint64 `json:"token,omitempty"`
	Strategy      string `json:"strategy,omitempty"`
	QueueMax      int    `json:"queue_max,omitempty"`
	DropNewest    bool   `json:"drop_newest,omitempty"`
	MaxHolders    int    `json:"max_holders,omitempty"`
	QueueWhenFull bool   `json:"queue_when_full,omitempty"`
}

// Policy is the input's LockPolicy, with ttl.
func (i LockInput) Policy(ttl time.Duration) botstate.LockPolicy {
	p := botstate.LockPolicy{TTL: ttl, QueueMax: i.QueueMax, MaxHolders: i.MaxHolders, QueueWhenFull: i.QueueWhenFull}
	switch i.Strategy {
	case "queue":
		p.Strategy = botstate.Queue
	case "debounce":
		p.Strategy = botstate.Debounce
	case "concurrent":
		p.Strategy = botstate.Concurrent
	default:
		p.Strategy = botstate.Reject
	}
	if i.DropNewest {
		p.OnFull = botstate.DropNewest
	}
	return p
}

// LockHolder is one holder as Inspect shows it: its token, owner and the
// entry it is handling ("" for none).
type LockHolder struct {
	Token uint64 `json:"token"`
	Owner string `json:"owner"`
	Entry string `json:"entry,omitempty"`
}

// LockOutput is what the call returned: Status (acquired, queued,
// debounced, busy) and, when acquired, the new Token, the Next entry to
// handle first and the Skipped entries, for Acquire and TakeOver; the
// Dropped entries of Acquire; Held, Next and Skipped for Handover and Next;
// the Entries given back by Release and ForceRelease; Holders (by token),
// Entries (pending), Skipped and Fence for Inspect. Entries are payloads;
// "" in Next is none. Err is ErrName of the error.
type LockOutput struct {
	Status  string       `json:"status,omitempty"`
	Token   uint64       `json:"token,omitempty"`
	Held    bool         `json:"held,omitempty"`
	Next    string       `json:"next,omitempty"`
	Dropped []string     `json:"dropped,omitempty"`
	Skipped []string     `json:"skipped,omitempty"`
	Entries []string     `json:"entries,omitempty"`
	Holders []LockHolder `json:"holders,omitempty"`
	Fence   uint64       `json:"fence,omitempty"`
	Err     string       `json:"err,omitempty"`
}

func (o LockOutput) equal(p LockOutput) bool {
	return o.Status == p.Status && o.Token == p.Token && o.Held == p.Held && o.Next == p.Next &&
		slices.Equal(o.Dropped, p.Dropped) && slices.Equal(o.Skipped, p.Skipped) && slices.Equal(o.Entries, p.Entries) &&
		slices.Equal(o.Holders, p.Holders) && o.Fence == p.Fence && o.Err == p.Err
}

func payloads(es []botstate.Entry) []string {
	if len(es) == 0 {
		return nil
	}
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e.Payload)
	}
	return out
}

func payload(e *botstate.Entry) string {
	if e == nil {
		return ""
	}
	return string(e.Payload)
}

// AcquireOutput records what Acquire or TakeOver returned.
func AcquireOutput(r botstate.AcquireResult, err error) LockOutput {
	if err != nil {
		return LockOutput{Err: ErrName(err)}
	}
	return LockOutput{Status: r.Status.String(), Token: r.Lock.Token, Next: payload(r.Next), Dropped: payloads(r.Dropped), Skipped: payloads(r.Skipped)}
}

// HandoverOutput records what Handover or Next returned.
func HandoverOutput(h botstate.HandoverResult, err error) LockOutput {
	if err != nil {
		return LockOutput{Err: ErrName(err)}
	}
	return LockOutput{Held: h.Held, Next: payload(h.Next), Skipped: payloads(h.Skipped)}
}

// EntriesOutput records what Release or ForceRelease returned.
func EntriesOutput(es []botstate.Entry, err error) LockOutput {
	if err != nil {
		return LockOutput{Err: ErrName(err)}
	}
	return LockOutput{Entries: payloads(es)}
}

// LockErrOutput records a call that returns only an error (Extend,
// Abandon).
func LockErrOutput(err error) LockOutput { return LockOutput{Err: ErrName(err)} }

// InspectOutput records what Inspect returned.
func InspectOutput(st botstate.LockState, err error) LockOutput {
	if err != nil {
		return LockOutput{Err: ErrName(err)}
	}
	o := LockOutput{Entries: payloads(st.Pending), Skipped: payloads(st.Skipped), Fence: st.Fence}
	for _, h := range st.Holders {
		o.Holders = append(o.Holders, LockHolder{Token: h.Token, Owner: h.Owner, Entry: payload(h.Entry)})
	}
	slices.SortFunc(o.Holders, func(a, b LockHolder) int { return cmp.Compare(a.Token, b.Token) })
	return o
}

// lockState is one lock as the contract sees it: its holders by token, the
// highest token issued, the pending entries oldest first, and the skipped
// entries not yet handed to a holder. Steps never modify a state's slices:
// they build new ones.
type lockState struct {
	holders []LockHolder
	fence   uint64
	pending []string
	skipped []string
}

func (s lockState) equal(t lockState) bool {
	return s.fence == t.fence && slices.Equal(s.holders, t.holders) && slices.Equal(s.pending, t.pending) && slices.Equal(s.skipped, t.skipped)
}

func (s lockState) hash() uint64 {
	h := fnv.New64a()
	b := strconv.AppendUint(nil, s.fence, 10)
	for _, x := range s.holders {
		b = strconv.AppendUint(append(b, ';'), x.Token, 10)
		b = append(append(append(b, '/'), x.Owner...), '/')
		b = append(b, x.Entry...)
	}
	for _, list := range [][]string{s.pending, s.skipped} {
		b = append(b, '|')
		for _, e := range list {
			b = append(append(b, e...), ',')
		}
	}
	_, _ = h.Write(b)
	return h.Sum64()
}

func (s lockState) holder(token uint64) int {
	if token == 0 {
		return -1
	}
	return slices.IndexFunc(s.holders, func(h LockHolder) bool { return h.Token == token })
}

// skip returns skipped with es appended, keeping the newest MaxSkipped.
func skip(skipped []string, es ...string) []string {
	out := append(slices.Clip(skipped), es...)
	if n := len(out) - driver.MaxSkipped; n > 0 {
		out = out[n:]
	}
	return out
}

// LockModel is the locks contract for one key at a time, with TTLs that
// never lapse during the history:
//
//   - Acquire grants the lock when nobody holds it, or with Concurrent
//     while fewer than MaxHolders (any number when 0) hold it; the new
//     holder's token is above every token issued for the key. Granted while
//     entries wait, the caller handles the oldest first (Next) and its own
//     entry joins the back of the queue, except under Debounce, where its
//     entry replaces the waiting ones (Dropped). Otherwise Reject answers
//     Busy; Queue (and Concurrent with QueueWhenFull) appends the entry,
//     dropping the oldest ones of a queue of QueueMax (Dropped) or, with
//     DropNewest, refusing the entry (Busy); Debounce replaces the waiting
//     entries with the caller's (Dropped) and answers Debounced.
//   - Entries that leave the queue unhandled are skipped, and whoever is
//     next given the lock or an entry (Acquired, or Handover or Next that
//     keep the lock) gets them, oldest first, the newest MaxSkipped.
//   - Extend, Release, Abandon, Handover and Next succeed only with a
//     holder's token, whoever calls them, and otherwise return ErrNotOwner
//     and change nothing. Release removes the holder and, when it was the
//     last, returns the waiting entries and clears them; Abandon removes it
//     and puts its entry back at the front of the queue; Handover gives the
//     holder the oldest waiting entry or, when none waits, releases it;
//     Next does the same but keeps the lock when none waits. TakeOver
//     grants a free lock with no entry of the caller's own (Busy when held).
//     ForceRelease removes every holder and returns the waiting entries.
//   - Inspect returns the holders, the waiting and skipped entries and the
//     highest token issued.
func LockModel() porcupine.Model {
	return porcupine.Model{
		Partition: partitionByKey(func(in any) string { return in.(LockInput).Key }),
		Init:      func() any { return lockState{} },
		Step: func(st, in, out any) (bool, any) {
			s, i, o := st.(lockState), in.(LockInput), out.(LockOutput)
			want, next, ok := lockStep(s, i, o.Token)
			return ok && o.equal(want), next
		},
		Equal: func(a, b any) bool { return a.(lockState).equal(b.(lockState)) },
		Hash:  func(st any) uint64 { return st.(lockState).hash() },
		DescribeOperation: func(in, out any) string {
			i, o := in.(LockInput), out.(LockOutput)
			held := ""
			if (i.Op == LockHandover || i.Op == LockNext) && o.Err == "" {
				held = "released"
				if o.Held {
					held = "held"
				}
			}
			res := cmp.Or(fields("", o.Err, "", o.Status, "", held, "token", o.Token, "next", o.Next, "dropped", o.Dropped,
				"skipped", o.Skipped, "entries", o.Entries, "holders", o.Holders, "fence", o.Fence), "ok")
			return fmt.Sprintf("%s(%s) -> %s", i.Op, fields("", i.Key, "owner", i.Owner, "entry", i.Entry, "token", i.Token,
				"", i.Strategy, "queue_max", i.QueueMax, "drop_newest", i.DropNewest, "max_holders", i.MaxHolders, "queue_when_full", i.QueueWhenFull), res)
		},
		DescribeState: func(st any) string {
			s := st.(lockState)
			return cmp.Or(fields("holders", s.holders, "fence", s.fence, "pending", s.pending, "skipped", s.skipped), "never locked")
		},
	}
}

// lockStep is the contract's answer to i in state s: the output it expects
// and the next state. token is the token the actual output carries: a grant
// takes it, and ok is false when it may not (not above the fence).
func lockStep(s lockState, i LockInput, token uint64) (want LockOutput, next lockState, ok bool) {
	next = s
	switch i.Op {
	case LockAcquire, LockTakeOver:
		takeover := i.Op == LockTakeOver
		// own is the caller's message as a holder keeps it: an empty
		// entry, or a TakeOver's, is none.
		own := i.Entry
		if takeover {
			own = ""
		}
		grantable := len(s.holders) == 0 ||
			!takeover && i.Strategy == "concurrent" && (i.MaxHolders == 0 || len(s.holders) < i.MaxHolders)
		if grantable {
			if token <= s.fence {
				return want, s, false
			}
			h := LockHolder{Token: token, Owner: i.Owner}
			want = LockOutput{Status: "acquired", Token: token}
			switch {
			case len(s.pending) == 0:
				h.Entry = own
			case i.Strategy == "debounce" && own != "":
				want.Dropped = s.pending
				next.skipped = skip(s.skipped, s.pending...)
				next.pending = nil
				h.Entry = own
			default:
				h.Entry, want.Next = s.pending[0], s.pending[0]
				next.pending = slices.Clone(s.pending[1:])
				if own != "" {
					next.pending = append(next.pending, own)
				}
			}
			next.holders = append(slices.Clone(s.holders), h)
			slices.SortFunc(next.holders, func(a, b LockHolder) int { return cmp.Compare(a.Token, b.Token) })
			next.fence = token
			want.Skipped, next.skipped = next.skipped, nil
			return want, next, true
		}
		switch {
		case takeover:
			want.Status = "busy"
		case i.Strategy == "queue" || i.Strategy == "concurrent" && i.QueueWhenFull:
			want.Status = "queued"
			next.pending = slices.Clone(s.pending)
			if i.QueueMax > 0 && len(s.pending) >= i.QueueMax {
				if i.DropNewest {
					next.skipped = skip(s.skipped, i.Entry)
					next.pending = s.pending
					want.Status = "busy"
					break
				}
				n := len(s.pending) - i.QueueMax + 1
				want.Dropped = s.pending[:n]
				next.skipped = skip(s.skipped, s.pending[:n]...)
				next.pending = slices.Clone(s.pending[n:])
			}
			next.pending = append(next.pending, i.Entry)
		case i.Strategy == "debounce":
			want = LockOutput{Status: "debounced", Dropped: s.pending}
			next.skipped = skip(s.skipped, s.pending...)
			next.pending = []string{i.Entry}
		default:
			want.Status = "busy"
		}
		return want, next, true
	case LockExtend, LockRelease, LockAbandon, LockHandover, LockNext:
		h := s.holder(i.Token)
		if h < 0 {
			return LockOutput{Err: ErrNotOwner}, s, true
		}
		rest := slices.Delete(slices.Clone(s.holders), h, h+1)
		switch i.Op {
		case LockRelease:
			next.holders = rest
			if len(rest) == 0 {
				want.Entries, next.pending = s.pending, nil
			}
		case LockAbandon:
			next.holders = rest
			if e := s.holders[h].Entry; e != "" {
				next.pending = append([]string{e}, s.pending...)
			}
		case LockHandover, LockNext:
			switch {
			case len(s.pending) > 0:
				next.holders = slices.Clone(s.holders)
				next.holders[h].Entry = s.pending[0]
				next.pending = slices.Clone(s.pending[1:])
				want = LockOutput{Held: true, Next: s.pending[0]}
			case i.Op == LockNext:
				want = LockOutput{Held: true}
			default:
				next.holders = rest
				return want, next, true
			}
			want.Skipped, next.skipped = s.skipped, nil
		}
		return want, next, true
	case LockForceRelease:
		want.Entries = s.pending
		next.holders, next.pending = nil, nil
		return want, next, true
	case LockInspect:
		return LockOutput{Holders: s.holders, Entries: s.pending, Skipped: s.skipped, Fence: s.fence}, s, true
	}
	return want, s, false
}
