package driver

import (
	"slices"
	"strings"
)

// Pager gathers a page — the first limit items in key order whose keys sort
// after after — from a walk in no order (a map, a SCAN, an export): once
// twice the page is gathered it is cut to the page, and keys that sort after
// its last are passed over (Wants), so only what can still be on the page is
// kept or copied. Items with equal keys count once (a SCAN can return a name
// twice).
type Pager[T any] struct {
	after  string
	limit  int
	key    func(*T) string
	items  []T
	cutoff string
	cut    bool
}

// NewPager returns a pager of limit items after after, keyed by key.
func NewPager[T any](after string, limit int, key func(*T) string) *Pager[T] {
	return &Pager[T]{after: after, limit: limit, key: key}
}

// Wants reports whether an item keyed k can still be on the page.
func (p *Pager[T]) Wants(k string) bool {
	return k > p.after && (!p.cut || k < p.cutoff)
}

// Add gathers an item that Wants.
func (p *Pager[T]) Add(v T) {
	p.items = append(p.items, v)
	if len(p.items) >= 2*p.limit {
		p.trim()
	}
}

func (p *Pager[T]) trim() {
	slices.SortFunc(p.items, func(a, b T) int { return strings.Compare(p.key(&a), p.key(&b)) })
	p.items = slices.CompactFunc(p.items, func(a, b T) bool { return p.key(&a) == p.key(&b) })
	if len(p.items) > p.limit {
		p.items = p.items[:p.limit]
	}
	if len(p.items) == p.limit && p.limit > 0 {
		p.cutoff, p.cut = p.key(&p.items[p.limit-1]), true
	}
}

// Page returns the page, in key order.
func (p *Pager[T]) Page() []T {
	p.trim()
	return p.items
}
