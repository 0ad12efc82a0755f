package driver

import (
	"context"
	"math/rand/v2"
	"time"
)

// Helpers for the waiting every backend does: retries with backoff and
// background work on an interval.

// Sleep waits for d, or until ctx ends and then returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Backoff is the wait before retry n (0-based): base doubled with every
// retry up to ceiling, jittered over its upper half so that callers that
// failed together do not retry together.
func Backoff(n int, base, ceiling time.Duration) time.Duration {
	d := ceiling
	if n < 30 && base<<n < ceiling {
		d = base << n
	}
	return d/2 + rand.N(d/2+1)
}

// Every calls fn every interval until done is closed. Background reapers
// and sweepers run on it.
func Every(done <-chan struct{}, every time.Duration, fn func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			fn()
		}
	}
}
