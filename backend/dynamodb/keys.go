package dynamodb

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/botstate/botstate/driver"
)

// ---- key parts ------------------------------------------------------------------

// maxPlain is the longest escaped id kept readable in a key. Longer ids are
// replaced by a digest so that every key stays far below DynamoDB's limits
// (2048 bytes for a partition key, 1024 for a sort key, an index's keys
// included) whatever the id: keys are up to 1 KiB and correlation ids up to
// 4 KiB, and escaping can triple their length.
const maxPlain = 200

// part encodes an id for use between '#' delimiters: '%', '#' and '~' are
// percent-escaped, so the result never holds the delimiter and never starts
// with '~'; an id whose escaped form is longer than maxPlain becomes '~'
// followed by the base64url SHA-256 of the id. The encoding is injective up
// to SHA-256 collisions, and items whose key holds a digest also hold the
// full id in an attribute that every read compares, so a collision could
// never hand one id's item to another id's reader.
func part(id string) string {
	if len(id) <= maxPlain && !strings.ContainsAny(id, "%#~") {
		return id
	}
	if len(id) <= maxPlain {
		if esc := escaper.Replace(id); len(esc) <= maxPlain {
			return esc
		}
	}
	sum := sha256.Sum256([]byte(id))
	return "~" + base64.RawURLEncoding.EncodeToString(sum[:])
}

var escaper = strings.NewReplacer("%", "%25", "#", "%23", "~", "%7E")

// Partition and sort keys. The namespace, which never holds '#', leads every
// partition key, so namespaces can never see each other's items, and every
// prefix a query matches with begins_with ends with '#'.
func pkEvent(ns, key string) string       { return ns + "#EV#" + part(key) }
func pkEventOrder(ns string) string       { return ns + "#EVORDER#" }
func pkEventCount(ns string) string       { return ns + "#EVCOUNT#" }
func pkConv(ns, key string) string        { return ns + "#CV#" + part(key) }
func pkSubs(ns string) string             { return ns + "#SUB#" }
func pkCache(ns, key string) string       { return ns + "#CA#" + part(key) }
func pkLock(ns, key string) string        { return ns + "#LK#" + part(key) }
func pkChannel(ns, channel string) string { return ns + "#CH#" + part(channel) }

func pkDoc(ns string, scope driver.Scope, id string) string {
	if scope == driver.ScopeChannel {
		return ns + "#CS#" + part(id)
	}
	return ns + "#TS#" + part(id)
}

const (
	skEvent     = "EVENT#"
	skCount     = "COUNT#"
	skConv      = "CONV#"
	skDoc       = "DOC#"
	skValue     = "VALUE#"
	skList      = "LIST#"
	skLock      = "LOCK#"
	skProcState = "PROCESSINGSTATE#"
)

func skAlert(uid string) string         { return "ALERT#" + part(uid) + "#" }
func skIssue(uid string) string         { return "ISSUE#" + part(uid) + "#" }
func skMapping(corr string) string      { return "MOVEMAPPING#" + part(corr) + "#" }
func openIssues(ns string) string       { return ns + "#ISSUE#" }
func openChannel(channel string) string { return part(channel) + "#" }
func openCorr(channel, corr string) string {
	return part(channel) + "#" + part(corr) + "#"
}
func openIssueSK(channel, corr, uid string) string {
	return openCorr(channel, corr) + part(uid) + "#"
}

// Index partitions of events that are neither completed nor failed, one
// per status, and of failed ones: what Pending, Expired, Due and Failed
// query. Released events keep the partition that recorded and released
// events shared before recorded ones got their own, so Due still finds
// events released by older versions (and skips the recorded ones those
// left there).
func recordedEvents(ns string) string { return ns + "#EVR#" }
func releasedEvents(ns string) string { return ns + "#EVP#" }
func claimedEvents(ns string) string  { return ns + "#EVC#" }
func failedEvents(ns string) string   { return ns + "#EVF#" }

// lapsingLocks is the index partition of locks with an entry that outlives
// their holders, sorted by when the last holder lapses: what Lapsed
// queries.
func lapsingLocks(ns string) string { return ns + "#LKL#" }

// timeOrderSK sorts items by a time in an index sort key (events by
// creation, locks by when their last holder lapses): the time as
// fixed-width digits, then the key.
func timeOrderSK(t time.Time, key string) string {
	return timeSortable(t) + "#" + part(key) + "#"
}

// timeSortable writes t as 21 digits that sort as the times do, for every
// time from year 1 to 9999.
func timeSortable(t time.Time) string {
	const offset = 100_000_000_000 // seconds: more than year 1 is before 1970
	return fmt.Sprintf("%012d%09d", t.Unix()+offset, t.Nanosecond())
}

// ---- values -------------------------------------------------------------------

type av = types.AttributeValue

func avS(v string) av    { return &types.AttributeValueMemberS{Value: v} }
func avN(v string) av    { return &types.AttributeValueMemberN{Value: v} }
func avB(v []byte) av    { return &types.AttributeValueMemberB{Value: v} }
func avBool(v bool) av   { return &types.AttributeValueMemberBOOL{Value: v} }
func avInt(v int64) av   { return avN(strconv.FormatInt(v, 10)) }
func avUint(v uint64) av { return avN(strconv.FormatUint(v, 10)) }

// avTime encodes t as seconds since the epoch with nine decimals: exact for
// every time.Time, and comparable in condition expressions, since DynamoDB
// numbers hold 38 digits.
func avTime(t time.Time) av { return avN(timeNumber(t)) }

func timeNumber(t time.Time) string {
	sec, nsec := t.Unix(), int64(t.Nanosecond())
	if sec < 0 && nsec > 0 {
		// -1.25 s is sec -2 and nsec 750000000: write it as -1.25.
		return fmt.Sprintf("-%d.%09d", -(sec + 1), 1_000_000_000-nsec)
	}
	return fmt.Sprintf("%d.%09d", sec, nsec)
}

// parseTimeNumber reads what avTime wrote, in whatever normal form DynamoDB
// returns it ("1700000000.5", "1700000000", "-0.25").
func parseTimeNumber(s string) (time.Time, error) {
	neg := strings.HasPrefix(s, "-")
	body := strings.TrimPrefix(s, "-")
	if strings.ContainsAny(body, "eE+-") {
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			return time.Time{}, fmt.Errorf("bad time number %q", s)
		}
		ns := new(big.Int).Quo(new(big.Int).Mul(r.Num(), big.NewInt(1e9)), r.Denom())
		sec, rem := new(big.Int).DivMod(ns, big.NewInt(1e9), new(big.Int))
		return time.Unix(sec.Int64(), rem.Int64()).UTC(), nil
	}
	ip, fp, _ := strings.Cut(body, ".")
	sec, err := strconv.ParseInt(ip, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time number %q", s)
	}
	var nsec int64
	if fp != "" {
		if len(fp) > 9 {
			fp = fp[:9]
		}
		fp += strings.Repeat("0", 9-len(fp))
		if nsec, err = strconv.ParseInt(fp, 10, 64); err != nil {
			return time.Time{}, fmt.Errorf("bad time number %q", s)
		}
	}
	if neg {
		sec, nsec = -sec, -nsec
	}
	return time.Unix(sec, nsec).UTC(), nil
}

// avTTL is the ttl attribute for native expiry: whole seconds, one past the
// logical expiry, so DynamoDB never deletes an item a reader still sees.
func avTTL(t time.Time) av { return avInt(t.Unix() + 1) }

// newRev returns a fresh revision for optimistic writes. It is random rather
// than a counter so that an item deleted and created again can never repeat
// a revision a slow writer read before.
func newRev() av { return avN(revision()) }

func revision() string { return strconv.FormatUint(rand.Uint64(), 10) }

// ---- reading items ---------------------------------------------------------------

type item = map[string]av

func getS(it item, name string) string {
	if v, ok := it[name].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func getB(it item, name string) []byte {
	if v, ok := it[name].(*types.AttributeValueMemberB); ok {
		if v.Value == nil {
			return []byte{}
		}
		return v.Value
	}
	return nil
}

func getBool(it item, name string) bool {
	v, ok := it[name].(*types.AttributeValueMemberBOOL)
	return ok && v.Value
}

func getN(it item, name string) string {
	if v, ok := it[name].(*types.AttributeValueMemberN); ok {
		return v.Value
	}
	return ""
}

func getInt(it item, name string) int64 {
	n, _ := strconv.ParseInt(getN(it, name), 10, 64)
	return n
}

func getUint(it item, name string) uint64 {
	n, _ := strconv.ParseUint(getN(it, name), 10, 64)
	return n
}

func getTime(it item, name string) time.Time {
	s := getN(it, name)
	if s == "" {
		return time.Time{}
	}
	t, err := parseTimeNumber(s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// setTime stores t under name, or nothing for the zero time.
func setTime(it item, name string, t time.Time) {
	if !t.IsZero() {
		it[name] = avTime(t)
	}
}

// setExpiry stores the logical expiry (exp, compared by reads and
// conditions) and the native one (ttl, for DynamoDB's garbage collection).
func setExpiry(it item, t time.Time) {
	if !t.IsZero() {
		it[attrExp] = avTime(t)
		it[attrTTL] = avTTL(t)
	}
}

// ---- item size --------------------------------------------------------------------

// itemSize is DynamoDB's size of an item: names plus values, numbers about
// one byte per two digits, containers three bytes plus one per element.
func itemSize(it item) int {
	n := 0
	for k, v := range it {
		n += len(k) + valueSize(v)
	}
	return n
}

func valueSize(v av) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		return (len(v.Value)+1)/2 + 1
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberM:
		n := 3
		for k, e := range v.Value {
			n += len(k) + valueSize(e) + 1
		}
		return n
	case *types.AttributeValueMemberL:
		n := 3
		for _, e := range v.Value {
			n += valueSize(e) + 1
		}
		return n
	}
	return 0
}

// checkSize refuses an item DynamoDB would refuse for its size, before
// sending it.
func checkSize(op string, it item) error {
	if n := itemSize(it); n > maxItemSize {
		return tooLarge(op, n)
	}
	return nil
}

// ---- expressions ------------------------------------------------------------------

// expr collects the names and values an expression uses: DynamoDB refuses
// unused ones, and most of our attribute names (ttl, data, state, status...)
// are reserved words, so every name goes through an alias.
type expr struct {
	names  map[string]string
	values map[string]av
}

func newExpr() *expr { return &expr{names: map[string]string{}, values: map[string]av{}} }

// n returns the alias of a fixed attribute name ([a-z_] only).
func (e *expr) n(attr string) string {
	alias := "#" + attr
	e.names[alias] = attr
	return alias
}

// arbitrary returns an alias for a name that may hold any character (a
// member of a JSON object).
func (e *expr) arbitrary(name string) string {
	alias := "#m" + strconv.Itoa(len(e.names))
	e.names[alias] = name
	return alias
}

// v returns a placeholder for a value.
func (e *expr) v(val av) string {
	p := ":v" + strconv.Itoa(len(e.values))
	e.values[p] = val
	return p
}

func (e *expr) namesOrNil() map[string]string {
	if len(e.names) == 0 {
		return nil
	}
	return e.names
}

func (e *expr) valuesOrNil() map[string]av {
	if len(e.values) == 0 {
		return nil
	}
	return e.values
}

// live is the condition "the item exists and has not expired at now".
func (e *expr) live(now time.Time) string {
	exp := e.n(attrExp)
	return "(attribute_exists(" + e.n(attrPK) + ") AND (attribute_not_exists(" + exp + ") OR " + exp + " > " + e.v(avTime(now)) + "))"
}

// absent is the condition "no item, or one that expired at or before now".
func (e *expr) absent(now time.Time) string {
	return "(attribute_not_exists(" + e.n(attrPK) + ") OR " + e.n(attrExp) + " <= " + e.v(avTime(now)) + ")"
}

// sameRev is the condition "the item is the one read": its revision, or its
// absence when none was read.
func (e *expr) sameRev(rev string) string {
	if rev == "" {
		return "attribute_not_exists(" + e.n(attrPK) + ")"
	}
	return e.n(attrRev) + " = " + e.v(avN(rev))
}

// Common attribute names.
const (
	attrType = "t"   // item type, for export
	attrKey  = "k"   // the full key or id
	attrExp  = "exp" // logical expiry, avTime
	attrRev  = "rev" // revision for optimistic writes
)

// Item types.
const (
	typeEvent   = "event"
	typeOrder   = "event_order"
	typeCount   = "event_count"
	typeConv    = "conversation"
	typeSub     = "subscription"
	typeDoc     = "doc"
	typeValue   = "cache_value"
	typeList    = "cache_list"
	typeLock    = "lock"
	typeAlert   = "alert"
	typeIssue   = "issue"
	typeMapping = "move_mapping"
	typeState   = "processing_state"
)

func keyOf(pk, sk string) item { return item{attrPK: avS(pk), attrSK: avS(sk)} }
