package redis

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/botstate/botstate/driver"
)

// scanCount is the COUNT hint of each SCAN step, and exportBatch how many
// keys are read back in one pipelined round trip.
const (
	scanCount   = 1000
	importBatch = 512
)

// globEscape quotes the glob characters of s for SCAN MATCH.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// masters returns a client per primary node: SCAN runs on each of them
// (never KEYS), and replicas are skipped since they repeat their primary.
func (d *Driver) masters(ctx context.Context) ([]rueidis.Client, error) {
	nodes := d.client.Nodes()
	if !d.cluster {
		out := make([]rueidis.Client, 0, len(nodes))
		for _, c := range nodes {
			out = append(out, c)
		}
		return out, nil
	}
	var out []rueidis.Client
	for _, c := range nodes {
		role, err := c.Do(ctx, c.B().Role().Build()).ToArray()
		if err != nil {
			return nil, d.fail(ctx, err)
		}
		if len(role) > 0 {
			if r, _ := role[0].ToString(); r == "master" {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// Export implements driver.Snapshots: SCAN over every primary for the
// namespace's keys (every botstate key under the prefix when ns is empty),
// reading them back in pipelined batches. Index keys are skipped; each item
// is emitted from its own key or, for subscriptions and incidents, from its
// namespace's hash.
func (d *Driver) Export(ctx context.Context, ns string, now time.Time, emit func(*driver.Record) error) error {
	if err := d.check(); err != nil {
		return err
	}
	pattern := globEscape(d.prefix) + "{"
	if ns != "" {
		pattern += ns + ":"
	}
	pattern += "*"
	return d.scanMasters(ctx, pattern, scanCount, func(_ rueidis.Client, names []string) error {
		return d.exportKeys(ctx, ns, names, now, emit)
	})
}

// scanMasters runs SCAN MATCH pattern COUNT count to the end on every
// master and hands each step's names to fn with the node they are on. A
// name can come twice (the keyspace may be rehashed meanwhile).
func (d *Driver) scanMasters(ctx context.Context, pattern string, count int64, fn func(c rueidis.Client, names []string) error) error {
	nodes, err := d.masters(ctx)
	if err != nil {
		return err
	}
	for _, c := range nodes {
		var cursor uint64
		for {
			e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(pattern).Count(count).Build()).AsScanEntry()
			if err != nil {
				return d.fail(ctx, err)
			}
			if err := fn(c, e.Elements); err != nil {
				return err
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	return nil
}

func (d *Driver) exportKeys(ctx context.Context, ns string, keys []string, now time.Time, emit func(*driver.Record) error) error {
	type read struct {
		pk  parsedKey
		key string
	}
	var reads []read
	var cmds rueidis.Commands
	var listReads, lockReads []read
	var lists, locks []rueidis.LuaExec
	for _, k := range keys {
		pk, ok := d.parseKey(k)
		if !ok || (ns != "" && pk.ns != ns) {
			continue
		}
		r := read{pk: pk, key: k}
		switch pk.dom {
		case domEvents:
			if strings.HasPrefix(pk.rest, "k:") {
				reads = append(reads, r)
				cmds = append(cmds, d.client.B().Get().Key(k).Build())
			}
		case domConv, domThread, domChannel:
			reads = append(reads, r)
			cmds = append(cmds, d.client.B().Hgetall().Key(k).Build())
		case domCache:
			switch {
			case strings.HasPrefix(pk.rest, "v"):
				reads = append(reads, r)
				cmds = append(cmds, d.client.B().Get().Key(k).Build())
			case strings.HasPrefix(pk.rest, "l"):
				listReads = append(listReads, r)
				lists = append(lists, rueidis.LuaExec{Keys: d.cacheKeys(pk.ns, pk.rest[1:]), Args: []string{us(now)}})
			}
		case domLocks:
			if strings.HasPrefix(pk.rest, "m") {
				lockReads = append(lockReads, r)
				locks = append(locks, rueidis.LuaExec{Keys: d.lockKeys(pk.ns, pk.rest[1:]), Args: []string{us(now)}})
			}
		case domSubs:
			if pk.rest == "h" {
				reads = append(reads, r)
				cmds = append(cmds, d.client.B().Hgetall().Key(k).Build())
			}
		case domIncident:
			switch pk.rest {
			case "is", "al", "mm", "ps":
				reads = append(reads, r)
				cmds = append(cmds, d.client.B().Hgetall().Key(k).Build())
			}
		}
	}
	if len(cmds) > 0 {
		for i, res := range d.client.DoMulti(ctx, cmds...) {
			if err := d.exportOne(ctx, reads[i].pk, res, now, emit); err != nil {
				return err
			}
		}
	}
	var results []rueidis.RedisResult
	luaReads := append(listReads, lockReads...)
	if len(lists) > 0 {
		results = append(results, listRangeScript.ExecMulti(ctx, d.client, lists...)...)
	}
	if len(locks) > 0 {
		results = append(results, inspectScript.ExecMulti(ctx, d.client, locks...)...)
	}
	for i, res := range results {
		out, err := strs(res)
		if err != nil {
			return d.fail(ctx, err)
		}
		pk := luaReads[i].pk
		if len(out) == 0 || (pk.dom == domLocks && out[0] != "1") {
			continue
		}
		var rec driver.Record
		if pk.dom == domCache {
			exp, err := fromUS(out[0])
			if err != nil {
				return err
			}
			vals := make([][]byte, 0, len(out)-1)
			for _, v := range out[1:] {
				vals = append(vals, []byte(v))
			}
			if len(vals) == 0 {
				continue
			}
			rec = driver.Record{Kind: driver.KindCacheList, NS: pk.ns, Key: pk.rest[1:], Values: vals, ExpiresAt: exp}
		} else {
			st, err := parseLock(pk.rest[1:], out[1:])
			if err != nil {
				return err
			}
			rec = driver.LockRecord(pk.ns, st)
		}
		if err := emit(&rec); err != nil {
			return err
		}
	}
	return nil
}

// exportOne turns one read back into records.
func (d *Driver) exportOne(ctx context.Context, pk parsedKey, res rueidis.RedisResult, now time.Time, emit func(*driver.Record) error) error {
	var pairs []string
	var val string
	switch pk.dom {
	case domEvents, domCache:
		v, err := res.ToString()
		if isNil(err) {
			return nil
		}
		if err != nil {
			return d.fail(ctx, err)
		}
		val = v
	default:
		m, err := res.AsStrMap()
		if err != nil {
			return d.fail(ctx, err)
		}
		for k, v := range m {
			pairs = append(pairs, k, v)
		}
	}
	switch pk.dom {
	case domEvents:
		e, err := unpackEvent(pk.rest[2:], val)
		if err != nil {
			return err
		}
		if !driver.Live(e.ExpiresAt, now) {
			return nil
		}
		rec := driver.EventRecord(pk.ns, e)
		return emit(&rec)
	case domCache:
		f, err := unpack(val, 2)
		if err != nil {
			return err
		}
		exp, err := fromUS(f[0])
		if err != nil || !driver.Live(exp, now) {
			return err
		}
		rec := driver.Record{Kind: driver.KindCacheValue, NS: pk.ns, Key: pk.rest[1:], Payload: []byte(f[1]), ExpiresAt: exp}
		return emit(&rec)
	case domConv, domThread, domChannel:
		if len(pairs) == 0 {
			return nil
		}
		o, err := parseObject(pairs)
		if err != nil {
			return err
		}
		if ok, err := o.live(now); err != nil || !ok {
			return err
		}
		var rec driver.Record
		if pk.dom == domConv {
			c, err := o.conversation(pk.rest)
			if err != nil {
				return err
			}
			rec = driver.ConversationRecord(pk.ns, c)
		} else {
			doc, err := o.doc(pk.rest)
			if err != nil {
				return err
			}
			scope := driver.ScopeThread
			if pk.dom == domChannel {
				scope = driver.ScopeChannel
			}
			rec = driver.Record{Kind: driver.DocKind(scope), NS: pk.ns, Key: doc.ID, Data: doc.Data,
				UpdatedAt: doc.UpdatedAt, ExpiresAt: doc.ExpiresAt}
		}
		return emit(&rec)
	case domSubs:
		for i := 0; i+1 < len(pairs); i += 2 {
			f, err := unpack(pairs[i+1], 2)
			if err != nil {
				return err
			}
			c, err1 := fromUS(f[0])
			x, err2 := fromUS(f[1])
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			if !driver.Live(x, now) {
				continue
			}
			rec := driver.Record{Kind: driver.KindSubscription, NS: pk.ns, Key: pairs[i], CreatedAt: c, ExpiresAt: x}
			if err := emit(&rec); err != nil {
				return err
			}
		}
	case domIncident:
		for i := 0; i+1 < len(pairs); i += 2 {
			rec, ok, err := incidentRecord(pk.ns, pk.rest, pairs[i], pairs[i+1], now)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if err := emit(&rec); err != nil {
				return err
			}
		}
	}
	return nil
}

// incidentRecord decodes one field of an incident hash (which names it).
func incidentRecord(ns, hash, field, v string, now time.Time) (driver.Record, bool, error) {
	if hash == "ps" {
		return driver.Record{Kind: driver.KindProcessingState, NS: ns, Channel: field, Body: v}, true, nil
	}
	ch, rest, ok := splitLP(field)
	if !ok {
		return driver.Record{}, false, errCorrupt
	}
	switch hash {
	case "is":
		r, err := unpackIssue(ch, rest, v)
		if err != nil || !driver.Live(r.ExpiresAt, now) {
			return driver.Record{}, false, err
		}
		return driver.IssueRecordOf(ns, r), true, nil
	case "al":
		f, err := unpack(v, 3)
		if err != nil {
			return driver.Record{}, false, err
		}
		exp, err := fromUS(f[0])
		if err != nil || !driver.Live(exp, now) {
			return driver.Record{}, false, err
		}
		var ts time.Time
		if err := ts.UnmarshalText([]byte(f[1])); err != nil {
			return driver.Record{}, false, errCorrupt
		}
		return driver.AlertRecordOf(ns, driver.AlertRecord{Channel: ch, UniqueID: rest, Timestamp: ts,
			Body: []byte(f[2]), ExpiresAt: exp}), true, nil
	default: // "mm"
		f, err := unpack(v, 2)
		if err != nil {
			return driver.Record{}, false, err
		}
		return driver.MoveMappingRecordOf(ns, driver.MoveMappingRecord{Channel: ch, CorrelationID: rest,
			UniqueID: f[0], Body: []byte(f[1])}), true, nil
	}
}

// op is one record's write: a script run or a single command.
type op struct {
	script *rueidis.Lua
	exec   rueidis.LuaExec
	cmd    rueidis.Completed
}

// Import implements driver.Snapshots. Each record is one script (or one
// command), so each record lands whole; the records are sent in pipelined
// batches, a round trip per batch and script. Redis has no transaction
// spanning slots, so an import interrupted by a lost connection may leave
// the records before the failure written; the portable layer validated every
// record before this point, so nothing else can fail halfway.
func (d *Driver) Import(ctx context.Context, recs []driver.Record) error {
	if err := d.check(); err != nil {
		return err
	}
	for start := 0; start < len(recs); start += importBatch {
		end := min(start+importBatch, len(recs))
		byScript := map[*rueidis.Lua][]rueidis.LuaExec{}
		var order []*rueidis.Lua
		var cmds rueidis.Commands
		for i := start; i < end; i++ {
			o, err := d.importOp(&recs[i])
			if err != nil {
				return err
			}
			if o.script == nil {
				cmds = append(cmds, o.cmd)
				continue
			}
			if _, seen := byScript[o.script]; !seen {
				order = append(order, o.script)
			}
			byScript[o.script] = append(byScript[o.script], o.exec)
		}
		if len(cmds) > 0 {
			for _, res := range d.client.DoMulti(ctx, cmds...) {
				if err := res.Error(); err != nil {
					return d.fail(ctx, err)
				}
			}
		}
		for _, s := range order {
			for _, res := range s.ExecMulti(ctx, d.client, byScript[s]...) {
				if err := res.Error(); err != nil {
					return d.fail(ctx, err)
				}
			}
		}
	}
	return nil
}

func (d *Driver) importOp(r *driver.Record) (op, error) {
	lua := func(s *rueidis.Lua, keys []string, args ...string) (op, error) {
		return op{script: s, exec: rueidis.LuaExec{Keys: keys, Args: args}}, nil
	}
	switch r.Kind {
	case driver.KindEvent:
		e, ok := r.Event()
		if !ok {
			return op{}, errors.New("redis: import: bad event status")
		}
		if d.scan {
			b := d.client.B().Set().Key(d.scanKey(r.NS, r.Key)).Value(packEvent(&e))
			if e.ExpiresAt.IsZero() {
				return op{cmd: b.Build()}, nil
			}
			return op{cmd: b.Pxat(pxatTime(e.ExpiresAt)).Build()}, nil
		}
		base := d.nsBase(r.NS, domEvents)
		return lua(importEventScript, []string{d.eventKey(base, r.Key), base + evClaims}, packEvent(&e),
			pxat(e.ExpiresAt), us(e.CreatedAt), r.Key, indexExpiry(e.ExpiresAt), strconv.Itoa(int(e.Status)))
	case driver.KindConversation:
		c := r.Conversation()
		kv, err := dataArgs(c.Data)
		if err != nil {
			return op{}, err
		}
		args := append([]string{us(c.ExpiresAt), "!f", c.Flow, "!s", c.State, "!v", strconv.FormatInt(c.Version, 10),
			"!u", us(c.UpdatedAt), "!x", us(c.ExpiresAt)}, kv...)
		return lua(replaceHashScript, []string{d.convKey(r.NS, r.Key)}, args...)
	case driver.KindThreadState, driver.KindChannelState:
		scope := driver.ScopeThread
		if r.Kind == driver.KindChannelState {
			scope = driver.ScopeChannel
		}
		kv, err := dataArgs(r.Data)
		if err != nil {
			return op{}, err
		}
		args := append([]string{us(r.ExpiresAt), "!u", us(r.UpdatedAt), "!x", us(r.ExpiresAt)}, kv...)
		return lua(replaceHashScript, []string{d.docKey(r.NS, scope, r.Key)}, args...)
	case driver.KindSubscription:
		return lua(subscribeScript, d.subKeys(r.NS), us(r.CreatedAt), r.Key, us(r.ExpiresAt), us(r.CreatedAt))
	case driver.KindCacheValue:
		set := d.client.B().Set().Key(d.cacheKeys(r.NS, r.Key)[0]).Value(pack(us(r.ExpiresAt), string(r.Payload)))
		if r.ExpiresAt.IsZero() {
			return op{cmd: set.Build()}, nil
		}
		return op{cmd: set.PxatMillisecondsTimestamp(msCeil(r.ExpiresAt)).Build()}, nil
	case driver.KindCacheList:
		args := []string{us(r.ExpiresAt)}
		for _, v := range r.Values {
			args = append(args, string(v))
		}
		return lua(importListScript, d.cacheKeys(r.NS, r.Key), args...)
	case driver.KindLock:
		args := []string{strconv.FormatUint(r.Fence, 10), us(r.ExpiresAt), strconv.Itoa(len(r.Holders)), strconv.Itoa(len(r.Pending))}
		for i := range r.Holders {
			args = append(args, tokenArg(r.Holders[i].Token), packHolder(&r.Holders[i]))
		}
		for i := range r.Pending {
			args = append(args, packEntry(&r.Pending[i]))
		}
		for i := range r.Skipped {
			args = append(args, packEntry(&r.Skipped[i]))
		}
		return lua(importLockScript, d.lockKeys(r.NS, r.Key), args...)
	case driver.KindAlert:
		a := r.Alert()
		ts, err := a.Timestamp.MarshalText()
		if err != nil {
			return op{}, err
		}
		k := d.incKeys(r.NS)
		return lua(saveAlertScript, []string{k.alerts, k.alertExp}, "", a.Channel, a.UniqueID, us(a.ExpiresAt), string(ts), string(a.Body))
	case driver.KindIssue:
		is := r.Issue()
		return lua(saveIssuesScript, d.incKeys(r.NS).issueScriptKeys(), append([]string{""}, issueArgs(&is)...)...)
	case driver.KindMoveMapping:
		m := r.MoveMapping()
		return op{cmd: d.client.B().Hset().Key(d.incKeys(r.NS).mappings).FieldValue().
			FieldValue(lp(m.Channel)+m.CorrelationID, pack(m.UniqueID, string(m.Body))).Build()}, nil
	case driver.KindProcessingState:
		return op{cmd: d.client.B().Hset().Key(d.incKeys(r.NS).states).FieldValue().
			FieldValue(r.Channel, r.Body).Build()}, nil
	}
	return op{}, errors.New("redis: import: unknown record kind " + string(r.Kind))
}
