package driver

import (
	"context"
	"fmt"
	"time"
)

// Browsable reports whether Browse lists kind.
func Browsable(kind Kind) bool { return kind == KindConversation || kind == KindLock }

// BrowseKindError is the error of a Browse call for a kind it does not list.
func BrowseKindError(kind Kind) error {
	return fmt.Errorf("browse lists conversations and locks, not %q: %w", kind, ErrInvalidArgument)
}

// Browse lists a page as Browser.Browse does: with d's own Browse when it
// has one, otherwise from d's Export (a walk of the whole namespace per
// page, kept to twice the page in memory).
func Browse(ctx context.Context, d Driver, ns string, kind Kind, after string, limit int, now time.Time) ([]Record, error) {
	if !Browsable(kind) {
		return nil, BrowseKindError(kind)
	}
	if limit <= 0 {
		return nil, nil
	}
	if b, ok := d.(Browser); ok {
		return b.Browse(ctx, ns, kind, after, limit, now)
	}
	p := NewPager(after, limit, func(r *Record) string { return r.Key })
	err := d.Export(ctx, ns, now, func(r *Record) error {
		if r.Kind != kind || r.NS != ns || !p.Wants(r.Key) {
			return nil
		}
		if kind == KindLock && LockIdle(new(r.Lock())) {
			return nil
		}
		p.Add(*r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p.Page(), nil
}
