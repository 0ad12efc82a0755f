package redis

import (
	"strings"
	"testing"

	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/internal/fuzzinput"
)

// fuzzPrefix turns any string into a key prefix ParseURL accepts.
func fuzzPrefix(s string) string { return strings.NewReplacer("{", "", "}", "").Replace(s) }

// hashSlot is the Cluster slot of a whole key, by Redis Cluster's rule: the
// hash tag is what lies between the first '{' and the first '}' after it,
// when that is not empty; otherwise the whole key is hashed.
func hashSlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	return slotOf(key)
}

// redisName is one Redis key of an item, with what it stands for.
type redisName struct {
	name  string
	label string // prefix, role, namespace and (for items) key: equal names need equal labels
	dom   string // the domain parseKey must find ("" for a lapse bucket on Cluster, which it must refuse)
	rest  string // what parseKey must leave after the tag
	group string // the keys one script touches; each group must hash to one slot
}

// redisNames lists every key the driver builds for key in namespace ns.
func redisNames(d *Driver, ns, key string) []redisName {
	var out []redisName
	item := d.prefix + "\x00" + ns + "\x00" + key
	space := d.prefix + "\x00" + ns
	add := func(name, label, dom, rest, group string) {
		out = append(out, redisName{name, label, dom, rest, group})
	}
	add(d.convKey(ns, key), "conv\x00"+item, domConv, key, "conv")
	add(d.docKey(ns, driver.ScopeThread, key), "thread\x00"+item, domThread, key, "thread")
	add(d.docKey(ns, driver.ScopeChannel, key), "channel\x00"+item, domChannel, key, "channel")
	for i, role := range []string{"v", "l", "m"} {
		add(d.cacheKeys(ns, key)[i], "cache "+role+"\x00"+item, domCache, role+key, "cache")
	}
	lk := d.lockKeys(ns, key)
	add(lk[0], "lock record\x00"+item, domLocks, "m"+key, "lock")
	add(lk[1], "lock queue\x00"+item, domLocks, "q"+key, "lock")
	if d.cluster {
		add(lk[2], "lapse bucket\x00"+space+"\x00"+slotTag(hashSlot(lk[0])), "", "", "lock")
	} else {
		add(lk[2], "lapse bucket\x00"+space, domLocks, "i", "lock")
	}
	events := d.nsBase(ns, domEvents)
	add(d.eventKey(events, key), "event\x00"+item, domEvents, "k:"+key, "events")
	for _, ix := range []string{evClaims, evReleased, evRecords, evFailed, evOrder} {
		add(events+ix, "event index "+ix+"\x00"+space, domEvents, ix, "events")
	}
	for i, role := range []string{"h", "o", "x"} {
		add(d.subKeys(ns)[i], "subscriptions "+role+"\x00"+space, domSubs, role, "subscriptions")
	}
	for _, name := range d.incKeys(ns).all() {
		role := strings.TrimPrefix(name, d.nsBase(ns, domIncident))
		add(name, "incidents "+role+"\x00"+space, domIncident, role, "incidents")
	}
	return out
}

// FuzzKeyEncoding: the Redis key names of two items (prefix, namespace,
// key; standalone or Cluster) are equal only when they name the same thing,
// whatever braces, colons or role letters the keys hold; every name parses
// back (parseKey, what Export reads) to its namespace, domain and key; the
// keys one script touches share a Cluster slot; a namespace's SCAN pattern
// matches its names and no other namespace's or prefix's; and a lapse
// bucket member turns back into its lock's keys as the Lua scripts do it.
func FuzzKeyEncoding(f *testing.F) {
	f.Add("botstate:", "ns", "a", "botstate:", "ns", "a}", false)
	f.Add("botstate:", "ns", "k:a", "botstate:", "ns", "a", true)
	f.Add("p", "a", "b:c", "p", "a:b", "c", false)
	f.Add("", "ns", "{x}", "", "nsx", "}{", true)
	f.Add("bs", "ns", "va", "bs", "ns", "la", false)
	f.Add("b", "s", "x", "bs", "", "x", false)
	f.Add("botstate:", "ns", "é{ü}", "botstate:", "ns", "mq", true)
	f.Fuzz(func(t *testing.T, p1, ns1, key1, p2, ns2, key2 string, cluster bool) {
		d1 := &Driver{prefix: fuzzPrefix(p1), cluster: cluster}
		d2 := &Driver{prefix: fuzzPrefix(p2), cluster: cluster}
		ns1, ns2, key1, key2 = fuzzinput.Namespace(ns1), fuzzinput.Namespace(ns2), fuzzinput.ID(key1, 1024), fuzzinput.ID(key2, 1024)
		names1, names2 := redisNames(d1, ns1, key1), redisNames(d2, ns2, key2)

		seen := map[string]string{}
		for _, n := range append(append([]redisName(nil), names1...), names2...) {
			if l, ok := seen[n.name]; ok && l != n.label {
				t.Fatalf("%q names both %q and %q", n.name, l, n.label)
			}
			seen[n.name] = n.label
		}

		for _, c := range []struct {
			d     *Driver
			ns    string
			key   string
			names []redisName
		}{{d1, ns1, key1, names1}, {d2, ns2, key2, names2}} {
			slots := map[string]int{}
			for _, n := range c.names {
				pk, ok := c.d.parseKey(n.name)
				if n.dom == "" {
					if ok {
						t.Fatalf("parseKey(%q) = %+v, want it refused (a lapse bucket on Cluster)", n.name, pk)
					}
				} else if !ok || pk.ns != c.ns || pk.dom != n.dom || pk.rest != n.rest {
					t.Fatalf("parseKey(%q) = %+v, %v; want ns %q, domain %q, rest %q", n.name, pk, ok, c.ns, n.dom, n.rest)
				}
				if !c.d.cluster {
					continue // one node: slots do not matter
				}
				if s, ok := slots[n.group]; ok && s != hashSlot(n.name) {
					t.Fatalf("%s keys in slots %d and %d: %q", n.group, s, hashSlot(n.name), n.name)
				}
				slots[n.group] = hashSlot(n.name)
			}
			// Lua's lk_index: the member is the tag's hash and the key
			// after "}m"; lapsedScript rebuilds the lock's keys from it.
			lk := c.d.lockKeys(c.ns, c.key)
			end := strings.IndexByte(lk[0], '}')
			member := lk[0][end-8:end] + lk[0][end+2:]
			base := c.d.prefix + "{" + c.ns + ":" + domLocks + ":" + member[:8] + "}"
			if base+"m"+member[8:] != lk[0] || base+"q"+member[8:] != lk[1] {
				t.Fatalf("lapse member %q rebuilds %q, %q; want %q", member, base+"m"+member[8:], base+"q"+member[8:], lk[:2])
			}
		}

		// Export's SCAN patterns: one namespace's, and every namespace's
		// under a prefix. Only the final '*' may be a wildcard.
		match := func(d *Driver, ns string, name string) bool {
			pattern := globEscape(d.prefix) + "{"
			if ns != "" {
				pattern += ns + ":"
			}
			lit, ok := unglob(pattern)
			if !ok {
				t.Fatalf("pattern %q holds a wildcard before its end", pattern+"*")
			}
			return strings.HasPrefix(name, lit)
		}
		for _, n := range names2 {
			if n.dom == "" {
				continue // Cluster buckets are found by their slot, not by SCAN
			}
			if !match(d2, ns2, n.name) || !match(d2, "", n.name) {
				t.Fatalf("%q is missed by its own namespace's export pattern", n.name)
			}
			if match(d1, ns1, n.name) != (d1.prefix == d2.prefix && ns1 == ns2) {
				t.Fatalf("%q (prefix %q, ns %q) matched by the pattern of prefix %q, ns %q: %v", n.name, d2.prefix, ns2, d1.prefix, ns1, !match(d1, ns1, n.name))
			}
			if match(d1, "", n.name) != (d1.prefix == d2.prefix) {
				t.Fatalf("%q (prefix %q) and the all-namespaces pattern of prefix %q", n.name, d2.prefix, d1.prefix)
			}
		}
	})
}

// unglob undoes globEscape, reporting a wildcard that was not escaped.
func unglob(p string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
			if i == len(p) {
				return "", false
			}
		case '*', '?', '[':
			return "", false
		}
		b.WriteByte(p[i])
	}
	return b.String(), true
}
