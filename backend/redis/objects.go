package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/botstate/botstate/driver"
)

// Conversations and thread/channel docs are hashes: '!'-fields hold the
// metadata, and every top-level member of the data object is a field "."+name
// holding the member's raw JSON text. A merge is an HSET inside a script, so
// Redis never parses JSON and no member is re-encoded; Go assembles the
// sorted, compact object on the way out (driver.CanonicalJSON of the
// members), which is byte for byte what driver.MergeObjects gives.

func (d *Driver) convKey(ns, key string) string { return d.keyBase(ns, domConv, key) + key }

func (d *Driver) docKey(ns string, scope driver.Scope, id string) string {
	dom := domThread
	if scope == driver.ScopeChannel {
		dom = domChannel
	}
	return d.keyBase(ns, dom, id) + id
}

// dataArgs splits a JSON object into "."+name, raw value pairs.
func dataArgs(data []byte) ([]string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("redis: data is not a JSON object: %w: %w", driver.ErrInvalidArgument, err)
	}
	if m == nil {
		return nil, fmt.Errorf("redis: data is null, not an object: %w", driver.ErrInvalidArgument)
	}
	out := make([]string, 0, 2*len(m))
	for k, v := range m {
		out = append(out, "."+k, string(v))
	}
	return out, nil
}

// object is a conversation or doc hash, read back.
type object struct {
	meta map[string]string
	data []byte
}

func parseObject(pairs []string) (object, error) {
	o := object{meta: map[string]string{}}
	members := map[string]json.RawMessage{}
	for i := 0; i+1 < len(pairs); i += 2 {
		f, v := pairs[i], pairs[i+1]
		switch {
		case len(f) > 0 && f[0] == '.':
			members[f[1:]] = json.RawMessage(v)
		case len(f) > 0 && f[0] == '!':
			o.meta[f[1:]] = v
		}
	}
	b, err := driver.CanonicalJSON(members)
	if err != nil {
		return object{}, fmt.Errorf("redis: stored data member is not JSON: %w", err)
	}
	o.data = b
	return o, nil
}

func (o object) time(name string) (time.Time, error) {
	v, ok := o.meta[name]
	if !ok {
		return time.Time{}, nil
	}
	return fromUS(v)
}

func (o object) conversation(key string) (driver.Conversation, error) {
	ver, err := strconv.ParseInt(o.meta["v"], 10, 64)
	if err != nil {
		return driver.Conversation{}, errCorrupt
	}
	upd, err1 := o.time("u")
	exp, err2 := o.time("x")
	if err1 != nil || err2 != nil {
		return driver.Conversation{}, errCorrupt
	}
	return driver.Conversation{Key: key, Flow: o.meta["f"], State: o.meta["s"], Data: o.data,
		Version: ver, UpdatedAt: upd, ExpiresAt: exp}, nil
}

func (o object) doc(id string) (driver.Doc, error) {
	upd, err1 := o.time("u")
	exp, err2 := o.time("x")
	if err1 != nil || err2 != nil {
		return driver.Doc{}, errCorrupt
	}
	return driver.Doc{ID: id, Data: o.data, UpdatedAt: upd, ExpiresAt: exp}, nil
}

// live reports whether a hash read with HGETALL holds a live object.
func (o object) live(now time.Time) (bool, error) {
	if _, ok := o.meta["x"]; !ok {
		return false, nil
	}
	exp, err := o.time("x")
	if err != nil {
		return false, errCorrupt
	}
	return driver.Live(exp, now), nil
}

func (d *Driver) hgetall(ctx context.Context, key string) ([]string, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	m, err := d.do(ctx, d.client.B().Hgetall().Key(key).Build()).AsStrMap()
	if err != nil {
		return nil, d.fail(ctx, err)
	}
	out := make([]string, 0, 2*len(m))
	for k, v := range m {
		out = append(out, k, v)
	}
	return out, nil
}

// ---- conversations ----

// GetConversation implements driver.Conversations with one HGETALL.
func (d *Driver) GetConversation(ctx context.Context, ns, key string, now time.Time) (driver.Conversation, bool, error) {
	pairs, err := d.hgetall(ctx, d.convKey(ns, key))
	if err != nil || len(pairs) == 0 {
		return driver.Conversation{}, false, err
	}
	o, err := parseObject(pairs)
	if err != nil {
		return driver.Conversation{}, false, err
	}
	if ok, err := o.live(now); err != nil || !ok {
		return driver.Conversation{}, false, err
	}
	c, err := o.conversation(key)
	return c, err == nil, err
}

func (d *Driver) writeConv(ctx context.Context, ns string, w driver.ConversationWrite, mode, a, flow, state string, data []byte) (driver.Conversation, error) {
	args := []string{us(w.Now), us(w.ExpiresAt), mode, a, flow, state}
	if data != nil {
		kv, err := dataArgs(data)
		if err != nil {
			return driver.Conversation{}, err
		}
		args = append(args, kv...)
	}
	out, err := d.run(ctx, convWriteScript, []string{d.convKey(ns, w.Key)}, args)
	if err != nil {
		return driver.Conversation{}, err
	}
	if len(out) == 0 {
		return driver.Conversation{}, errCorrupt
	}
	if mode == "merge" {
		if err := overLimit(out, a); err != nil {
			return driver.Conversation{}, err
		}
	}
	if out[0] != "1" {
		return driver.Conversation{}, driver.ErrConflict
	}
	o, err := parseObject(out[1:])
	if err != nil {
		return driver.Conversation{}, err
	}
	return o.conversation(w.Key)
}

// SetConversationState implements driver.Conversations.
func (d *Driver) SetConversationState(ctx context.Context, ns string, w driver.ConversationWrite, flow string, setFlow bool, state string) (driver.Conversation, error) {
	sf := "0"
	if setFlow {
		sf = "1"
	}
	return d.writeConv(ctx, ns, w, "state", sf, flow, state, nil)
}

// SetConversationData implements driver.Conversations.
func (d *Driver) SetConversationData(ctx context.Context, ns string, w driver.ConversationWrite, data []byte) (driver.Conversation, error) {
	return d.writeConv(ctx, ns, w, "data", "", "", "", data)
}

// MergeConversationData implements driver.Conversations: the patch's
// members are HSET into the hash inside the script, once it has measured
// the result (obj_merged_size, exact).
func (d *Driver) MergeConversationData(ctx context.Context, ns string, w driver.ConversationWrite, patch []byte, maxSize int) (driver.Conversation, error) {
	return d.writeConv(ctx, ns, w, "merge", limitArg(maxSize), "", "", patch)
}

func limitArg(maxSize int) string { return strconv.Itoa(max(maxSize, 0)) }

// overLimit is the error of a script's {2, size} reply: the merge would
// have left data of size bytes, over limit, and wrote nothing.
func overLimit(out []string, limit string) error {
	if out[0] != "2" {
		return nil
	}
	if len(out) == 2 {
		size, err1 := strconv.Atoi(out[1])
		maxSize, err2 := strconv.Atoi(limit)
		if err1 == nil && err2 == nil {
			if err := driver.CheckMergedSize(size, maxSize); err != nil {
				return err
			}
		}
	}
	return errCorrupt
}

// SwapConversation implements driver.Conversations: the version check and
// the write are one script.
func (d *Driver) SwapConversation(ctx context.Context, ns string, w driver.ConversationWrite, version int64, next driver.Conversation) (driver.Conversation, error) {
	data := next.Data
	if data == nil {
		data = driver.EmptyObject
	}
	return d.writeConv(ctx, ns, w, "swap", strconv.FormatInt(version, 10), next.Flow, next.State, data)
}

// DeleteConversation implements driver.Conversations with one DEL.
func (d *Driver) DeleteConversation(ctx context.Context, ns, key string) error {
	return d.del(ctx, d.convKey(ns, key))
}

func (d *Driver) del(ctx context.Context, keys ...string) error {
	if err := d.check(); err != nil {
		return err
	}
	return d.fail(ctx, d.do(ctx, d.client.B().Del().Key(keys...).Build()).Error())
}

// ---- docs ----

// GetDoc implements driver.Threads with one HGETALL.
func (d *Driver) GetDoc(ctx context.Context, ns string, scope driver.Scope, id string, now time.Time) (driver.Doc, bool, error) {
	pairs, err := d.hgetall(ctx, d.docKey(ns, scope, id))
	if err != nil || len(pairs) == 0 {
		return driver.Doc{}, false, err
	}
	o, err := parseObject(pairs)
	if err != nil {
		return driver.Doc{}, false, err
	}
	if ok, err := o.live(now); err != nil || !ok {
		return driver.Doc{}, false, err
	}
	doc, err := o.doc(id)
	return doc, err == nil, err
}

func (d *Driver) writeDoc(ctx context.Context, ns string, scope driver.Scope, id, mode string, data []byte, maxSize int, now, expiresAt time.Time) ([]string, error) {
	kv, err := dataArgs(data)
	if err != nil {
		return nil, err
	}
	args := append([]string{us(now), us(expiresAt), mode, limitArg(maxSize)}, kv...)
	return d.run(ctx, docWriteScript, []string{d.docKey(ns, scope, id)}, args)
}

// PutDoc implements driver.Threads.
func (d *Driver) PutDoc(ctx context.Context, ns string, scope driver.Scope, id string, data []byte, now, expiresAt time.Time) error {
	_, err := d.writeDoc(ctx, ns, scope, id, "put", data, 0, now, expiresAt)
	return err
}

// MergeDoc implements driver.Threads: an HSET of the patch's members inside
// the script, once it has measured the result, as MergeConversationData.
func (d *Driver) MergeDoc(ctx context.Context, ns string, scope driver.Scope, id string, patch []byte, maxSize int, now, expiresAt time.Time) (driver.Doc, error) {
	out, err := d.writeDoc(ctx, ns, scope, id, "merge", patch, maxSize, now, expiresAt)
	if err != nil {
		return driver.Doc{}, err
	}
	if len(out) == 0 {
		return driver.Doc{}, errCorrupt
	}
	if err := overLimit(out, limitArg(maxSize)); err != nil {
		return driver.Doc{}, err
	}
	if out[0] != "1" {
		return driver.Doc{}, errCorrupt
	}
	o, err := parseObject(out[1:])
	if err != nil {
		return driver.Doc{}, err
	}
	return o.doc(id)
}

// DeleteDoc implements driver.Threads with one DEL.
func (d *Driver) DeleteDoc(ctx context.Context, ns string, scope driver.Scope, id string) error {
	return d.del(ctx, d.docKey(ns, scope, id))
}
