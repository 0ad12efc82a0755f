package driver

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
	var page []Record
	trim := func() {
		slices.SortFunc(page, func(a, b Record) int { return strings.Compare(a.Key, b.Key) })
		if len(page) > limit {
			page = page[:limit]
		}
	}
	err := d.Export(ctx, ns, now, func(r *Record) error {
		if r.Kind != kind || r.NS != ns || r.Key <= after {
			return nil
		}
		if kind == KindLock && LockIdle(new(r.Lock())) {
			return nil
		}
		page = append(page, *r)
		if len(page) >= 2*limit {
			trim()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	trim()
	return page, nil
}
