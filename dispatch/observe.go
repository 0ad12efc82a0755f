package dispatch

import "time"

// Kind is what happened to a message, as an Observer hears it.
type Kind uint8

// Kinds of observation.
const (
	// KindHandled: the handler returned nil and the message completed.
	KindHandled Kind = iota + 1
	// KindDuplicate: a delivery of a message in progress, done or failed.
	KindDuplicate
	// KindDropped: refused because the scope was busy (Drop) or its queue
	// full.
	KindDropped
	// KindSkipped: left unhandled: replaced by a newer message, interrupted,
	// or expired in the queue.
	KindSkipped
	// KindRetried: the handler failed; the message will be retried.
	KindRetried
	// KindFailed: the handler failed for the last time, or permanently; the
	// message is parked as failed.
	KindFailed
	// KindLost: the handler lost its claim or its lock while it ran; the
	// message is left to whoever holds it now, or to recovery.
	KindLost
)

// String returns the kind's name, as a metric label would carry it.
func (k Kind) String() string {
	switch k {
	case KindHandled:
		return "handled"
	case KindDuplicate:
		return "duplicate"
	case KindDropped:
		return "dropped"
	case KindSkipped:
		return "skipped"
	case KindRetried:
		return "retried"
	case KindFailed:
		return "failed"
	case KindLost:
		return "lost"
	}
	return "invalid"
}

// Observation is one thing that happened to one message.
type Observation struct {
	Kind         Kind
	Route, Scope string
	Key          string
	// Attempt is the attempt the observation is about, when known.
	Attempt int
	// Latency is how long the handler ran (Handled, Retried, Failed, Lost).
	Latency time.Duration
	// Err is the handler's error (Retried, Failed, Lost).
	Err error
}

// Observer hears of every message's outcome, from the goroutine that
// decided it; it must be quick and safe for concurrent use. A metrics
// exporter counts Kinds and records Latency.
type Observer interface {
	Observe(Observation)
}

// ObserverFunc is a function as an Observer.
type ObserverFunc func(Observation)

// Observe calls f.
func (f ObserverFunc) Observe(o Observation) { f(o) }
