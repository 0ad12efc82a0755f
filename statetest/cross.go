package statetest

import (
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/botstate/botstate"
)

// RunCrossBackend checks that snapshots move between backends unchanged:
// state written on each backend exports to the same bytes as the same
// state written on the first, and a snapshot from any backend imports into
// any other and exports again byte-identical. backends maps a name to an
// opener; every opener gets the same fake clock.
func RunCrossBackend(t *testing.T, backends map[string]Opener) {
	names := make([]string, 0, len(backends))
	for n := range backends {
		names = append(names, n)
	}
	sort.Strings(names)
	clock := NewClock()
	ns := uniqueNamespace(t)
	snaps := map[string]string{}
	for _, n := range names {
		st := backends[n](t, botstate.WithClock(clock)).Namespace(ns)
		e := &env{t: t, open: backends[n], clock: clock, st: st}
		populate(e, st)
		snaps[n] = export(e, st)
	}
	// Claim tokens are random per store; everything else must match.
	tokens := regexp.MustCompile(`"token":"[^"]*"`)
	first := names[0]
	for _, n := range names[1:] {
		if tokens.ReplaceAllString(snaps[n], "") != tokens.ReplaceAllString(snaps[first], "") {
			t.Errorf("the same writes export differently on %s and %s:\n--- %s\n%s\n--- %s\n%s", first, n, first, snaps[first], n, snaps[n])
		}
	}
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			t.Run(from+"->"+to, func(t *testing.T) {
				dstNS := uniqueNamespace(t)
				dst := backends[to](t, botstate.WithClock(clock)).Namespace(dstNS)
				_, err := dst.Import(ctxT(t), strings.NewReader(renameNS(snaps[from], ns, dstNS)))
				ok(t, err, "import into %s", to)
				e := &env{t: t, clock: clock, st: dst}
				got := renameNS(export(e, dst), dstNS, ns)
				if got != snaps[from] {
					t.Fatalf("snapshot from %s re-exported from %s differs:\n--- exported by %s\n%s\n--- after import into %s\n%s", from, to, from, snaps[from], to, got)
				}
			})
		}
	}
}
