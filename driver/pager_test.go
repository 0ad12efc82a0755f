package driver_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/botstate/botstate/driver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestPagerKeepsTheFirstPageOfAnUnorderedWalk: from keys in random order,
// some twice, the pager returns the first limit keys after after, once
// each, in order, for every limit and start.
func TestPagerKeepsTheFirstPageOfAnUnorderedWalk(t *testing.T) {
	var all []string
	for i := range 200 {
		all = append(all, fmt.Sprintf("k%03d", i))
	}
	walk := append(slices.Clone(all), all[50:90]...) // some twice, as a SCAN may
	for _, limit := range []int{1, 7, 50, 300} {
		for _, after := range []string{"", "k049", "k150", "k199"} {
			rand.Shuffle(len(walk), func(i, j int) { walk[i], walk[j] = walk[j], walk[i] })
			p := driver.NewPager(after, limit, func(k *string) string { return *k })
			for _, k := range walk {
				if p.Wants(k) {
					p.Add(k)
				}
			}
			from, _ := slices.BinarySearch(all, after)
			if from < len(all) && all[from] == after {
				from++
			}
			want := all[from:min(from+limit, len(all))]
			if got := p.Page(); !slices.Equal(got, want) {
				t.Fatalf("limit %d after %q: %v, want %v", limit, after, got, want)
			}
		}
	}
}
