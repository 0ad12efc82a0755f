package lincheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// history builds operations that run one after the other, each on its own
// client unless client says otherwise: op i is called at 10i and returns at
// 10i+5, so their order is fixed. Concurrent operations are built by hand.
type history []porcupine.Operation

func (h history) then(client int, in, out any) history {
	n := int64(len(h))
	return append(h, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: 10 * n, Return: 10*n + 5})
}

func ev(op, key, token string) EventInput { return EventInput{Op: op, Key: key, Token: token} }

func lk(op, key string, token uint64) LockInput { return LockInput{Op: op, Key: key, Token: token} }

func acq(key, owner, entry, strategy string) LockInput {
	return LockInput{Op: LockAcquire, Key: key, Owner: owner, Entry: entry, Strategy: strategy}
}

var claimed1 = EventOutput{Status: "claimed", Token: "a", Attempts: 1}

// The models must accept what the contract allows and refuse what it does
// not, or the linearizability tests could pass a broken backend or fail a
// correct one.
func TestEventModel(t *testing.T) {
	for _, c := range []struct {
		name  string
		max   int
		h     history
		legal bool
	}{
		{"two claims of one key both win", 0, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(1, ev(EventClaim, "k", ""), EventOutput{Status: "claimed", Token: "b", Attempts: 1}), false},
		{"a stale token completes", 0, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(0, ev(EventRelease, "k", "a"), EventOutput{}).
			then(1, ev(EventClaim, "k", ""), EventOutput{Status: "claimed", Token: "b", Attempts: 2}).
			then(0, EventInput{Op: EventComplete, Key: "k", Token: "a", Result: "x"}, EventOutput{}), false},
		{"a stale token is refused", 0, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(0, ev(EventRelease, "k", "a"), EventOutput{}).
			then(1, ev(EventClaim, "k", ""), EventOutput{Status: "claimed", Token: "b", Attempts: 2}).
			then(0, EventInput{Op: EventComplete, Key: "k", Token: "a", Result: "x"}, EventOutput{Err: ErrNotOwner}), true},
		{"another process completes with the holder's token, then the holder is refused", 0, history{}.
			then(0, EventInput{Op: EventClaim, Key: "k", Payload: "p"}, claimed1).
			then(1, ev(EventGet, "k", ""), EventOutput{Status: "claimed", Token: "a", Payload: "p", Attempts: 1}).
			then(1, EventInput{Op: EventComplete, Key: "k", Token: "a", Result: "r"}, EventOutput{}).
			then(0, ev(EventComplete, "k", "a"), EventOutput{Err: ErrNotOwner}).
			then(2, ev(EventClaim, "k", ""), EventOutput{Status: "completed", Result: "r", Attempts: 1}), true},
		{"a completion reports success to the holder after another completed", 0, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(1, ev(EventComplete, "k", "a"), EventOutput{}).
			then(0, ev(EventComplete, "k", "a"), EventOutput{}), false},
		{"a token of another key completes", 0, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(0, ev(EventComplete, "j", "a"), EventOutput{}), false},
		{"a claim is in progress while another, called first, wins", 0, history{
			{ClientId: 0, Input: ev(EventClaim, "k", ""), Output: claimed1, Call: 0, Return: 30},
			{ClientId: 1, Input: ev(EventClaim, "k", ""), Output: EventOutput{Status: "in_progress", Attempts: 1}, Call: 10, Return: 20},
		}, true},
		{"a takeover passes the claim without an attempt", 0, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(1, ev(EventTakeOver, "k", "a"), EventOutput{Status: "claimed", Token: "b", Attempts: 1}).
			then(0, ev(EventExtend, "k", "a"), EventOutput{Err: ErrNotOwner}).
			then(1, ev(EventExtend, "k", "b"), EventOutput{}), true},
		{"a takeover counts an attempt", 0, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(1, ev(EventTakeOver, "k", "a"), EventOutput{Status: "claimed", Token: "b", Attempts: 2}), false},
		{"a takeover keeps the old token", 0, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(1, ev(EventTakeOver, "k", "a"), EventOutput{Status: "claimed", Token: "a", Attempts: 1}), false},
		{"the last attempt's release parks the event", 2, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(0, ev(EventRelease, "k", "a"), EventOutput{}).
			then(0, ev(EventReclaim, "k", ""), EventOutput{Status: "claimed", Token: "b", Attempts: 2}).
			then(0, ev(EventRelease, "k", "b"), EventOutput{}).
			then(1, ev(EventClaim, "k", ""), EventOutput{Status: "failed", LastError: "attempts exhausted", Attempts: 2}).
			then(1, ev(EventRetry, "k", ""), EventOutput{}).
			then(1, ev(EventClaim, "k", ""), EventOutput{Status: "claimed", Token: "c", Attempts: 1, LastError: ""}).
			then(1, ev(EventGet, "k", ""), EventOutput{Status: "claimed", Token: "c", Attempts: 1, LastError: "attempts exhausted"}), true},
		{"a claim past the maximum succeeds", 1, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(0, ev(EventRelease, "k", "a"), EventOutput{}).
			then(1, ev(EventClaim, "k", ""), EventOutput{Status: "claimed", Token: "b", Attempts: 2}), false},
		{"retry refuses an event that is not failed, forget makes it new", 0, history{}.
			then(0, ev(EventRetry, "k", ""), EventOutput{Err: ErrNotFound}).
			then(0, EventInput{Op: EventRecord, Key: "k", Payload: "p"}, EventOutput{Status: "new"}).
			then(1, ev(EventClaim, "k", ""), EventOutput{Status: "in_progress"}).
			then(1, ev(EventRetry, "k", ""), EventOutput{Err: ErrConflict}).
			then(1, EventInput{Op: EventRecord, Key: "k", Payload: "q"}, EventOutput{Status: "duplicate"}).
			then(0, ev(EventForget, "k", ""), EventOutput{}).
			then(0, ev(EventGet, "k", ""), EventOutput{Err: ErrNotFound}).
			then(1, ev(EventClaim, "k", ""), claimed1), true},
		{"get shows another payload than the first", 0, history{}.
			then(0, EventInput{Op: EventClaim, Key: "k", Payload: "p"}, claimed1).
			then(0, ev(EventRelease, "k", "a"), EventOutput{}).
			then(1, EventInput{Op: EventClaim, Key: "k", Payload: "q"}, EventOutput{Status: "claimed", Token: "b", Attempts: 2}).
			then(1, ev(EventGet, "k", ""), EventOutput{Status: "claimed", Token: "b", Payload: "q", Attempts: 2}), false},
		{"fail keeps its reason", 0, history{}.
			then(0, ev(EventClaim, "k", ""), claimed1).
			then(0, EventInput{Op: EventFail, Key: "k", Token: "a", Reason: "boom"}, EventOutput{}).
			then(1, ev(EventClaim, "k", ""), EventOutput{Status: "failed", LastError: "boom", Attempts: 1}), true},
		{"an unexpected error never fits", 0, history{}.
			then(0, ev(EventClaim, "k", ""), EventOutput{Err: ErrPrefix + "unavailable"}), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(EventModel(c.max), c.h); got != c.legal {
				t.Errorf("linearizable = %v, want %v:\n%s", got, c.legal, describe(EventModel(c.max), c.h))
			}
		})
	}
}

func TestLockModel(t *testing.T) {
	busy := LockOutput{Status: "busy"}
	for _, c := range []struct {
		name  string
		h     history
		legal bool
	}{
		{"a handover strands a queued entry", history{}.
			then(0, acq("L", "c0", "a", "queue"), LockOutput{Status: "acquired", Token: 5}).
			then(1, acq("L", "c1", "b", "queue"), LockOutput{Status: "queued"}).
			then(0, lk(LockHandover, "L", 5), LockOutput{}), false},
		{"a fencing token does not grow", history{}.
			then(0, acq("L", "c0", "a", "queue"), LockOutput{Status: "acquired", Token: 5}).
			then(0, lk(LockRelease, "L", 5), LockOutput{}).
			then(1, acq("L", "c1", "b", "queue"), LockOutput{Status: "acquired", Token: 4}), false},
		{"two holders of a reject lock", history{}.
			then(0, acq("L", "c0", "a", "reject"), LockOutput{Status: "acquired", Token: 5}).
			then(1, acq("L", "c1", "b", "reject"), LockOutput{Status: "acquired", Token: 6}), false},
		{"a reject lock is busy, then free", history{}.
			then(0, acq("L", "c0", "a", "reject"), LockOutput{Status: "acquired", Token: 5}).
			then(1, acq("L", "c1", "b", "reject"), busy).
			then(0, lk(LockRelease, "L", 5), LockOutput{}).
			then(1, acq("L", "c1", "c", "reject"), LockOutput{Status: "acquired", Token: 6}), true},
		{"another process releases with the holder's token, then the holder is refused", history{}.
			then(0, acq("L", "c0", "a", "queue"), LockOutput{Status: "acquired", Token: 5}).
			then(1, acq("L", "c1", "b", "queue"), LockOutput{Status: "queued"}).
			then(2, lk(LockInspect, "L", 0), LockOutput{Holders: []LockHolder{{Token: 5, Owner: "c0", Entry: "a"}}, Entries: []string{"b"}, Fence: 5}).
			then(2, lk(LockRelease, "L", 5), LockOutput{Entries: []string{"b"}}).
			then(0, lk(LockHandover, "L", 5), LockOutput{Err: ErrNotOwner}).
			then(0, lk(LockExtend, "L", 5), LockOutput{Err: ErrNotOwner}), true},
		{"concurrent holders up to the cap", history{}.
			then(0, LockInput{Op: LockAcquire, Key: "L", Owner: "c0", Entry: "a", Strategy: "concurrent", MaxHolders: 2}, LockOutput{Status: "acquired", Token: 5}).
			then(1, LockInput{Op: LockAcquire, Key: "L", Owner: "c1", Entry: "b", Strategy: "concurrent", MaxHolders: 2}, LockOutput{Status: "acquired", Token: 6}).
			then(2, LockInput{Op: LockAcquire, Key: "L", Owner: "c2", Entry: "c", Strategy: "concurrent", MaxHolders: 2, QueueWhenFull: true}, LockOutput{Status: "queued"}).
			then(2, LockInput{Op: LockAcquire, Key: "L", Owner: "c2", Entry: "d", Strategy: "concurrent", MaxHolders: 2}, busy).
			then(0, lk(LockRelease, "L", 5), LockOutput{}).
			then(1, lk(LockRelease, "L", 6), LockOutput{Entries: []string{"c"}}), true},
		{"a third concurrent holder past the cap", history{}.
			then(0, LockInput{Op: LockAcquire, Key: "L", Owner: "c0", Entry: "a", Strategy: "concurrent", MaxHolders: 2}, LockOutput{Status: "acquired", Token: 5}).
			then(1, LockInput{Op: LockAcquire, Key: "L", Owner: "c1", Entry: "b", Strategy: "concurrent", MaxHolders: 2}, LockOutput{Status: "acquired", Token: 6}).
			then(2, LockInput{Op: LockAcquire, Key: "L", Owner: "c2", Entry: "c", Strategy: "concurrent", MaxHolders: 2}, LockOutput{Status: "acquired", Token: 7}), false},
		{"debounce keeps the latest and hands the replaced ones as skipped", history{}.
			then(0, acq("L", "c0", "a", "debounce"), LockOutput{Status: "acquired", Token: 5}).
			then(1, acq("L", "c1", "b", "debounce"), LockOutput{Status: "debounced"}).
			then(2, acq("L", "c2", "c", "debounce"), LockOutput{Status: "debounced", Dropped: []string{"b"}}).
			then(0, lk(LockHandover, "L", 5), LockOutput{Held: true, Next: "c", Skipped: []string{"b"}}).
			then(0, lk(LockHandover, "L", 5), LockOutput{}), true},
		{"a full queue refuses the newest under drop-newest", history{}.
			then(0, acq("L", "c0", "a", "queue"), LockOutput{Status: "acquired", Token: 5}).
			then(1, LockInput{Op: LockAcquire, Key: "L", Owner: "c1", Entry: "b", Strategy: "queue", QueueMax: 1, DropNewest: true}, LockOutput{Status: "queued"}).
			then(1, LockInput{Op: LockAcquire, Key: "L", Owner: "c1", Entry: "c", Strategy: "queue", QueueMax: 1, DropNewest: true}, busy).
			then(1, LockInput{Op: LockAcquire, Key: "L", Owner: "c1", Entry: "d", Strategy: "queue", QueueMax: 1}, LockOutput{Status: "queued", Dropped: []string{"b"}}).
			then(0, lk(LockNext, "L", 5), LockOutput{Held: true, Next: "d", Skipped: []string{"c", "b"}}).
			then(0, lk(LockNext, "L", 5), LockOutput{Held: true}).
			then(0, lk(LockInspect, "L", 0), LockOutput{Holders: []LockHolder{{Token: 5, Owner: "c0", Entry: "d"}}, Fence: 5}), true},
		{"an abandoned entry comes back first, a takeover brings none", history{}.
			then(0, acq("L", "c0", "a", "queue"), LockOutput{Status: "acquired", Token: 5}).
			then(1, acq("L", "c1", "b", "queue"), LockOutput{Status: "queued"}).
			then(0, lk(LockAbandon, "L", 5), LockOutput{}).
			then(2, LockInput{Op: LockTakeOver, Key: "L", Owner: "c2"}, LockOutput{Status: "acquired", Token: 6, Next: "a"}).
			then(1, acq("L", "c1", "c", "reject"), busy).
			then(2, lk(LockRelease, "L", 6), LockOutput{Entries: []string{"b"}}).
			then(1, acq("L", "c1", "d", "queue"), LockOutput{Status: "acquired", Token: 7}), true},
		{"a lock acquired with entries waiting skips the oldest", history{}.
			then(0, acq("L", "c0", "a", "queue"), LockOutput{Status: "acquired", Token: 5}).
			then(1, acq("L", "c1", "b", "queue"), LockOutput{Status: "queued"}).
			then(0, lk(LockAbandon, "L", 5), LockOutput{}).
			then(2, acq("L", "c2", "c", "queue"), LockOutput{Status: "acquired", Token: 6}), false},
		{"force release empties the lock", history{}.
			then(0, acq("L", "c0", "a", "queue"), LockOutput{Status: "acquired", Token: 5}).
			then(1, acq("L", "c1", "b", "queue"), LockOutput{Status: "queued"}).
			then(2, lk(LockForceRelease, "L", 0), LockOutput{Entries: []string{"b"}}).
			then(0, lk(LockRelease, "L", 5), LockOutput{Err: ErrNotOwner}).
			then(2, lk(LockInspect, "L", 0), LockOutput{Fence: 5}), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(LockModel(), c.h); got != c.legal {
				t.Errorf("linearizable = %v, want %v:\n%s", got, c.legal, describe(LockModel(), c.h))
			}
		})
	}
}

// A violation is written as porcupine's visualisation.
func TestCheckWritesVisualisation(t *testing.T) {
	h := history{}.
		then(0, acq("L", "c0", "a", "reject"), LockOutput{Status: "acquired", Token: 5}).
		then(1, acq("L", "c1", "b", "reject"), LockOutput{Status: "acquired", Token: 6})
	dir := t.TempDir()
	res, path, err := Check(LockModel(), h, time.Minute, func() string { return filepath.Join(dir, "out") }, "locks")
	if res != porcupine.Illegal || err != nil {
		t.Fatalf("Check = %v, %v; want Illegal", res, err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), "acquire(L") {
		t.Fatalf("visualisation %s: %v, %d bytes, want the operations described", path, err, len(b))
	}
	if d := DescribeIllegal(LockModel(), h, time.Minute, 10); !strings.Contains(d, "=> client 1") {
		t.Errorf("DescribeIllegal does not point at the second acquire:\n%s", d)
	}
}

func describe(m porcupine.Model, h history) string {
	var b strings.Builder
	for _, op := range h {
		b.WriteString("  " + m.DescribeOperation(op.Input, op.Output) + "\n")
	}
	return b.String()
}
