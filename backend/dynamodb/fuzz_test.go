package dynamodb

import (
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/internal/fuzzinput"
)

// ddbItem is the ids one fuzz input stores under.
type ddbItem struct {
	ns, key, channel, corr string
	at                     time.Time
}

// ddbKey is one key of an item (a table key, or an index key), with what
// it stands for: equal keys need equal labels.
type ddbKey struct {
	pk, sk, label string
}

// tableKeys lists the table's (pk, sk) for every item x can be.
func tableKeys(x ddbItem) []ddbKey {
	ns, k, ch, c := x.ns, x.key, x.channel, x.corr
	l := func(kind string, ids ...string) string { return kind + "\x00" + strings.Join(ids, "\x00") }
	return []ddbKey{
		{pkEvent(ns, k), skEvent, l("event", ns, k)},
		{pkEventOrder(ns), orderSK(x.at, k), l("event order", ns, x.at.String(), k)},
		{pkEventCount(ns), skCount, l("event count", ns)},
		{pkConv(ns, k), skConv, l("conversation", ns, k)},
		{pkSubs(ns), k, l("subscription", ns, k)},
		{pkDoc(ns, driver.ScopeThread, k), skDoc, l("thread doc", ns, k)},
		{pkDoc(ns, driver.ScopeChannel, k), skDoc, l("channel doc", ns, k)},
		{pkCache(ns, k), skValue, l("cache value", ns, k)},
		{pkCache(ns, k), skList, l("cache list", ns, k)},
		{pkLock(ns, k), skLock, l("lock", ns, k)},
		{pkChannel(ns, ch), skAlert(k), l("alert", ns, ch, k)},
		{pkChannel(ns, ch), skIssue(k), l("issue", ns, ch, k)},
		{pkChannel(ns, ch), skMapping(c), l("move mapping", ns, ch, c)},
		{pkChannel(ns, ch), skProcState, l("processing state", ns, ch)},
	}
}

// openKeys lists GSIIsOpen's (is_open, open_sk) for every item x can be.
func openKeys(x ddbItem) []ddbKey {
	ns, k := x.ns, x.key
	at := x.at.String()
	l := func(kind string, ids ...string) string { return kind + "\x00" + strings.Join(ids, "\x00") }
	return []ddbKey{
		{openIssues(ns), openIssueSK(x.channel, x.corr, k), l("open issue", ns, x.channel, x.corr, k)},
		{recordedEvents(ns), timeOrderSK(x.at, k), l("recorded", ns, at, k)},
		{releasedEvents(ns), timeOrderSK(x.at, k), l("released", ns, at, k)},
		{claimedEvents(ns), timeOrderSK(x.at, k), l("claimed", ns, at, k)},
		{failedEvents(ns), timeOrderSK(x.at, k), l("failed", ns, at, k)},
		{lapsingLocks(ns), timeOrderSK(x.at, k), l("lapsing lock", ns, at, k)},
	}
}

// FuzzKeyEncoding: DynamoDB keys. Two items' table keys, and their
// GSIIsOpen keys, are equal only when they stand for the same thing; no
// key is over DynamoDB's limits (2048-byte partition key, 1024-byte sort
// key); part never holds the delimiter, escapes reversibly or digests, and
// never maps two ids to one; the begins_with prefixes of the open-issue
// queries match exactly their channel's (and correlation id's) issues, so
// "C1" never matches "C12"; time sort keys and time numbers order as
// their times do, and time numbers read back to the nanosecond.
func FuzzKeyEncoding(f *testing.F) {
	f.Add("ns", "a", "C1", "abc", int64(0), uint32(0), "ns", "a", "C12", "abcd", int64(0), uint32(1))
	f.Add("ns", "a#b", "C1#", "a%23", int64(-1), uint32(75e7), "ns", "a%23b", "C1%23", "a#", int64(-2), uint32(1))
	f.Add("ns", strings.Repeat("y", 201), "~C1", "%7E", int64(1<<40), uint32(0), "ns", strings.Repeat("y", 200), "%7EC1", "~", int64(1<<40), uint32(0))
	f.Add("a", "EV", "x", "y", int64(1700000000), uint32(5e8), "a#EV", "x", "x", "y", int64(1700000000), uint32(5e8))
	f.Fuzz(func(t *testing.T, ns1, k1, ch1, c1 string, s1 int64, n1 uint32, ns2, k2, ch2, c2 string, s2 int64, n2 uint32) {
		a := ddbItem{fuzzinput.Namespace(ns1), fuzzinput.ID(k1, 1024), fuzzinput.ID(ch1, 1024), fuzzinput.ID(c1, 4096), fuzzinput.Time(s1, n1)}
		b := ddbItem{fuzzinput.Namespace(ns2), fuzzinput.ID(k2, 1024), fuzzinput.ID(ch2, 1024), fuzzinput.ID(c2, 4096), fuzzinput.Time(s2, n2)}

		for _, keys := range [][]ddbKey{append(tableKeys(a), tableKeys(b)...), append(openKeys(a), openKeys(b)...)} {
			seen := map[[2]string]string{}
			for _, k := range keys {
				if len(k.pk) > 2048 || len(k.sk) > 1024 {
					t.Fatalf("%q: key of %d + %d bytes (%.40q, %.40q)", k.label, len(k.pk), len(k.sk), k.pk, k.sk)
				}
				if l, ok := seen[[2]string{k.pk, k.sk}]; ok && l != k.label {
					t.Fatalf("(%q, %q) is both %q and %q", k.pk, k.sk, l, k.label)
				}
				seen[[2]string{k.pk, k.sk}] = k.label
			}
		}

		for _, id := range []string{a.key, a.channel, a.corr, b.key, b.channel, b.corr} {
			p := part(id)
			switch {
			case strings.Contains(p, "#"):
				t.Fatalf("part(%q) = %q holds the delimiter", id, p)
			case strings.HasPrefix(p, "~"):
				if len(p) != 44 {
					t.Fatalf("part(%q) = %q: a digest of %d bytes", id, p, len(p))
				}
			case len(p) > maxPlain:
				t.Fatalf("part(%q) is %d bytes", id, len(p))
			default:
				if back, err := url.PathUnescape(p); err != nil || back != id {
					t.Fatalf("part(%q) = %q unescapes to %q, %v", id, p, back, err)
				}
			}
		}
		if (part(a.key) == part(b.key)) != (a.key == b.key) {
			t.Fatalf("part(%q) = %q, part(%q) = %q", a.key, part(a.key), b.key, part(b.key))
		}

		issue := openIssueSK(b.channel, b.corr, b.key)
		if strings.HasPrefix(issue, openChannel(a.channel)) != (a.channel == b.channel) {
			t.Fatalf("channel %q's prefix %q and the issue key %q of channel %q", a.channel, openChannel(a.channel), issue, b.channel)
		}
		if strings.HasPrefix(issue, openCorr(a.channel, a.corr)) != (a.channel == b.channel && a.corr == b.corr) {
			t.Fatalf("(%q, %q)'s prefix and the issue key %q of (%q, %q)", a.channel, a.corr, issue, b.channel, b.corr)
		}

		order := a.at.Compare(b.at)
		if got := strings.Compare(timeSortable(a.at), timeSortable(b.at)); got != order {
			t.Fatalf("timeSortable(%v) and timeSortable(%v) compare %d", a.at, b.at, got)
		}
		if order != 0 && strings.Compare(timeOrderSK(a.at, a.key), timeOrderSK(b.at, b.key)) != order {
			t.Fatalf("time sort keys of %v and %v out of order", a.at, b.at)
		}
		// Lapsed queries every lock lapsed by now with open_sk < timeSortable(now)+"$".
		if (timeOrderSK(a.at, a.key) < timeSortable(b.at)+"$") != (order <= 0) {
			t.Fatalf("a lock lapsing at %v and the lapsed query at %v", a.at, b.at)
		}
		for _, tm := range []time.Time{a.at, b.at} {
			if back, err := parseTimeNumber(timeNumber(tm)); err != nil || !back.Equal(tm) {
				t.Fatalf("%v -> %q -> %v, %v", tm, timeNumber(tm), back, err)
			}
		}
		ra, okA := new(big.Rat).SetString(timeNumber(a.at))
		rb, okB := new(big.Rat).SetString(timeNumber(b.at))
		if !okA || !okB || ra.Cmp(rb) != order {
			t.Fatalf("time numbers %q and %q do not order as %v and %v", timeNumber(a.at), timeNumber(b.at), a.at, b.at)
		}
	})
}
