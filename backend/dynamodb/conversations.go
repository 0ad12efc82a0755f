package dynamodb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/botstate/botstate/driver"
)

// Attributes of conversations and docs.
const (
	cvFlow    = "flow"
	cvState   = "state"
	cvData    = "d"   // map: one member per top-level JSON member
	cvVersion = "ver" // conversation version
	cvUpdated = "upd"
	docScope  = "sc"
	// cvSize bounds the data's size as a size limit counts it
	// (driver.DataSize): exact after a write of whole data (dataValue),
	// grown by the patch's members with each merge in place. A merge in
	// place lands only on condition that the grown bound is within its
	// limit, which the merge's result then is too; when the bound does not
	// show that, the merge reads, measures the result and writes it with an
	// exact bound on condition that nothing changed between (convRewrite,
	// docRewrite). Absent (items written before it existed, or merged with
	// no limit) means unknown.
	cvSize = "dsz"
)

// maxMergeMembers is the most members a merge sends as one UpdateItem with
// a SET clause each; DynamoDB caps an expression at 4 KB. A bigger patch is
// merged by an optimistic read-merge-write instead.
const maxMergeMembers = 100

// memberName is a JSON member's name inside the data map. The prefix keeps
// the empty name a valid map key.
func memberName(k string) string { return "." + k }

// dataValue stores a JSON object as a map of member name to the member's
// JSON text, so a merge can SET each member by its own path and concurrent
// merges of different members never overwrite each other. It returns the
// object's size as readData gives it back (driver.DataSize), counted from
// the members as stored, for cvSize.
func dataValue(data []byte) (av, int64, error) {
	obj, err := members(data)
	if err != nil {
		return nil, 0, err
	}
	m := make(map[string]av, len(obj))
	for k, v := range obj {
		m[memberName(k)] = avS(string(v))
	}
	return &types.AttributeValueMemberM{Value: m}, int64(driver.ObjectSize(len(obj), membersSize(obj))), nil
}

// membersSize is the sum of the members' driver.MemberSize.
func membersSize(obj map[string]json.RawMessage) int {
	n := 0
	for k, v := range obj {
		n += driver.MemberSize(k, v)
	}
	return n
}

// mergeSize is a merge in place's clauses on cvSize: with a limit, the
// bound grows by the patch's members, on condition (cond) that it stays
// within the limit; fits is false when the patch's members alone leave no
// room for that. Without a limit the merge is not counted and the bound
// goes (unknown).
func mergeSize(e *expr, set, remove []string, obj map[string]json.RawMessage, maxSize int) (_, _ []string, cond string, fits bool) {
	if maxSize <= 0 {
		return set, append(remove, e.n(cvSize)), "", true
	}
	add := int64(membersSize(obj))
	room := int64(maxSize) - add
	if room < 0 {
		return set, remove, "", false
	}
	set = append(set, e.n(cvSize)+" = "+e.n(cvSize)+" + "+e.v(avInt(add)))
	return set, remove, e.n(cvSize) + " <= " + e.v(avInt(room)), true
}

func members(data []byte) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("data is not a JSON object")
	}
	return obj, nil
}

// readData assembles the canonical JSON object from the data map.
func readData(it item) []byte {
	m, ok := it[cvData].(*types.AttributeValueMemberM)
	if !ok || len(m.Value) == 0 {
		return driver.EmptyObject
	}
	obj := make(map[string]json.RawMessage, len(m.Value))
	for k, v := range m.Value {
		if s, ok := v.(*types.AttributeValueMemberS); ok && len(k) > 0 {
			obj[k[1:]] = json.RawMessage(s.Value)
		}
	}
	b, err := driver.CanonicalJSON(obj)
	if err != nil {
		return driver.EmptyObject
	}
	return b
}

func decodeConv(it item) driver.Conversation {
	return driver.Conversation{
		Key: getS(it, attrKey), Flow: getS(it, cvFlow), State: getS(it, cvState), Data: readData(it),
		Version: getInt(it, cvVersion), UpdatedAt: getTime(it, cvUpdated), ExpiresAt: getTime(it, attrExp),
	}
}

func convItem(ns string, c *driver.Conversation) (item, error) {
	dv, size, err := dataValue(c.Data)
	if err != nil {
		return nil, err
	}
	it := keyOf(pkConv(ns, c.Key), skConv)
	it[attrType] = avS(typeConv)
	it[attrKey] = avS(c.Key)
	if c.Flow != "" {
		it[cvFlow] = avS(c.Flow)
	}
	if c.State != "" {
		it[cvState] = avS(c.State)
	}
	it[cvData] = dv
	it[cvSize] = avInt(size)
	it[cvVersion] = avInt(c.Version)
	setTime(it, cvUpdated, c.UpdatedAt)
	setExpiry(it, c.ExpiresAt)
	it[attrRev] = newRev()
	return it, nil
}

// GetConversation implements driver.Conversations.
func (d *Driver) GetConversation(ctx context.Context, ns, key string, now time.Time) (driver.Conversation, bool, error) {
	const op = "GetConversation"
	if err := d.check(); err != nil {
		return driver.Conversation{}, false, err
	}
	s, err := d.read(ctx, pkConv(ns, key), skConv)
	if err != nil {
		return driver.Conversation{}, false, fail(ctx, op, err)
	}
	if !s.exists {
		return driver.Conversation{}, false, nil
	}
	c := decodeConv(s.it)
	if c.Key != key || !driver.Live(c.ExpiresAt, now) {
		return driver.Conversation{}, false, nil
	}
	return c, true, nil
}

// touch adds the clauses every write of a conversation or doc makes: the
// update time, the expiry (set or removed) and a new revision.
func touch(e *expr, set, remove []string, now, expiresAt time.Time, rev string) ([]string, []string) {
	set = append(set, e.n(cvUpdated)+" = "+e.v(avTime(now)), e.n(attrRev)+" = "+e.v(avN(rev)))
	if expiresAt.IsZero() {
		remove = append(remove, e.n(attrExp), e.n(attrTTL))
	} else {
		set = append(set, e.n(attrExp)+" = "+e.v(avTime(expiresAt)), e.n(attrTTL)+" = "+e.v(avTTL(expiresAt)))
	}
	return set, remove
}

// updateLive applies an update to the live item under key, returning the
// item after it, or ok false when there is no live item (or cond, if any,
// does not hold).
func (d *Driver) updateLive(ctx context.Context, pk, sk, key string, e *expr, set, remove []string, now time.Time, cond string) (item, bool, error) {
	c := e.live(now) + " AND " + e.n(attrKey) + " = " + e.v(avS(key))
	if cond != "" {
		c += " AND " + cond
	}
	out, err := d.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(d.table), Key: keyOf(pk, sk),
		UpdateExpression:         aws.String(updateExpr(set, remove)),
		ConditionExpression:      aws.String(c),
		ExpressionAttributeNames: e.namesOrNil(), ExpressionAttributeValues: e.valuesOrNil(),
		ReturnValues: types.ReturnValueAllNew,
	})
	var cc *types.ConditionalCheckFailedException
	if errors.As(err, &cc) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return out.Attributes, true, nil
}

// createFresh puts it where no live item is; ok false when one is.
func (d *Driver) createFresh(ctx context.Context, it item, now time.Time) (bool, error) {
	if err := checkSize("write", it); err != nil {
		return false, err
	}
	e := newExpr()
	return d.putIf(ctx, it, e.absent(now), e)
}

// convWrite is the two-step write every conversation change makes: update
// the live conversation in place (one UpdateItem, its version incremented
// by the server), or, when there is none, create a fresh one at version 1
// on condition that there still is none. Each step is atomic; a loser of
// the race between them retries.
func (d *Driver) convWrite(ctx context.Context, op, ns string, w driver.ConversationWrite,
	update func(e *expr) (set, remove []string, err error), fresh func(c *driver.Conversation) error) (driver.Conversation, error) {
	if err := d.check(); err != nil {
		return driver.Conversation{}, err
	}
	pk := pkConv(ns, w.Key)
	for n := 0; n < maxAttempts; n++ {
		e := newExpr()
		set, remove, err := update(e)
		if err != nil {
			return driver.Conversation{}, err
		}
		set = append(set, e.n(cvVersion)+" = "+e.n(cvVersion)+" + "+e.v(avInt(1)))
		set, remove = touch(e, set, remove, w.Now, w.ExpiresAt, revision())
		it, ok, err := d.updateLive(ctx, pk, skConv, w.Key, e, set, remove, w.Now, "")
		if err != nil {
			return driver.Conversation{}, fail(ctx, op, err)
		}
		if ok {
			return decodeConv(it), nil
		}
		c := driver.Conversation{Key: w.Key, Data: driver.EmptyObject, Version: 1, UpdatedAt: w.Now, ExpiresAt: w.ExpiresAt}
		if err := fresh(&c); err != nil {
			return driver.Conversation{}, err
		}
		ci, err := convItem(ns, &c)
		if err != nil {
			return driver.Conversation{}, err
		}
		ok, err = d.createFresh(ctx, ci, w.Now)
		if err != nil {
			return driver.Conversation{}, fail(ctx, op, err)
		}
		if ok {
			return c, nil
		}
		if err := backoff(ctx, n); err != nil {
			return driver.Conversation{}, fail(ctx, op, err)
		}
	}
	return driver.Conversation{}, contention(op)
}

// SetConversationState implements driver.Conversations.
func (d *Driver) SetConversationState(ctx context.Context, ns string, w driver.ConversationWrite, flow string, setFlow bool, state string) (driver.Conversation, error) {
	return d.convWrite(ctx, "SetConversationState", ns, w, func(e *expr) (set, remove []string, err error) {
		set, remove = setOrRemove(e, set, remove, cvState, state)
		if setFlow {
			set, remove = setOrRemove(e, set, remove, cvFlow, flow)
		}
		return set, remove, nil
	}, func(c *driver.Conversation) error {
		if setFlow {
			c.Flow = flow
		}
		c.State = state
		return nil
	})
}

// setOrRemove sets a string attribute, or removes it for the empty string.
func setOrRemove(e *expr, set, remove []string, attr, v string) ([]string, []string) {
	if v == "" {
		return set, append(remove, e.n(attr))
	}
	return append(set, e.n(attr)+" = "+e.v(avS(v))), remove
}

// SetConversationData implements driver.Conversations.
func (d *Driver) SetConversationData(ctx context.Context, ns string, w driver.ConversationWrite, data []byte) (driver.Conversation, error) {
	dv, size, err := dataValue(data)
	if err != nil {
		return driver.Conversation{}, err
	}
	if n := valueSize(dv); n > maxItemSize {
		return driver.Conversation{}, tooLarge("SetConversationData", n)
	}
	return d.convWrite(ctx, "SetConversationData", ns, w, func(e *expr) ([]string, []string, error) {
		return []string{e.n(cvData) + " = " + e.v(dv), e.n(cvSize) + " = " + e.v(avInt(size))}, nil, nil
	}, func(c *driver.Conversation) error {
		c.Data = data
		return nil
	})
}

// MergeConversationData implements driver.Conversations: each top-level
// member of the patch is SET by its own path inside the data map, in one
// UpdateItem on condition that the size bound shows the result fits
// (cvSize), so concurrent merges never lose a member; where no conversation
// is live, one put on condition that none is. When neither lands (the
// bound is near the limit or unknown, or a conversation appeared in
// between), and for a patch too large for one expression, convRewrite
// merges exactly. A patch over the limit makes a result over it: it is
// refused before any request.
func (d *Driver) MergeConversationData(ctx context.Context, ns string, w driver.ConversationWrite, patch []byte, maxSize int) (driver.Conversation, error) {
	const op = "MergeConversationData"
	if err := d.check(); err != nil {
		return driver.Conversation{}, err
	}
	obj, err := members(patch)
	if err != nil {
		return driver.Conversation{}, err
	}
	if err := driver.CheckMergedSize(driver.DataSize(patch), maxSize); err != nil {
		return driver.Conversation{}, err
	}
	if len(obj) <= maxMergeMembers {
		c, ok, err := d.convMergeInPlace(ctx, ns, w, obj, patch, maxSize)
		if err != nil || ok {
			return c, fail(ctx, op, err)
		}
	}
	return d.convRewrite(ctx, op, ns, w, patch, maxSize)
}

// convMergeInPlace is MergeConversationData's usual case: the UpdateItem
// on the live conversation, else the put of a fresh one, else (another
// merge created it meanwhile) the UpdateItem again. ok is false when none
// landed.
func (d *Driver) convMergeInPlace(ctx context.Context, ns string, w driver.ConversationWrite, obj map[string]json.RawMessage, patch []byte, maxSize int) (driver.Conversation, bool, error) {
	update := func() (driver.Conversation, bool, error) {
		e := newExpr()
		set, remove, cond, fits := mergeSize(e, memberSets(e, obj), nil, obj, maxSize)
		if !fits {
			return driver.Conversation{}, false, nil
		}
		set = append(set, e.n(cvVersion)+" = "+e.n(cvVersion)+" + "+e.v(avInt(1)))
		set, remove = touch(e, set, remove, w.Now, w.ExpiresAt, revision())
		it, ok, err := d.updateLive(ctx, pkConv(ns, w.Key), skConv, w.Key, e, set, remove, w.Now, cond)
		if err != nil || !ok {
			return driver.Conversation{}, false, err
		}
		return decodeConv(it), true, nil
	}
	if c, ok, err := update(); err != nil || ok {
		return c, ok, err
	}
	merged, err := driver.MergeObjects(nil, patch)
	if err != nil {
		return driver.Conversation{}, false, err
	}
	c := driver.Conversation{Key: w.Key, Data: merged, Version: 1, UpdatedAt: w.Now, ExpiresAt: w.ExpiresAt}
	ci, err := convItem(ns, &c)
	if err != nil {
		return driver.Conversation{}, false, err
	}
	if ok, err := d.createFresh(ctx, ci, w.Now); err != nil || ok {
		return c, ok, err
	}
	return update()
}

// memberSets is one SET clause per member: #d.#m = :json.
func memberSets(e *expr, obj map[string]json.RawMessage) []string {
	out := make([]string, 0, len(obj))
	data := e.n(cvData)
	for k, v := range obj {
		out = append(out, data+"."+e.arbitrary(memberName(k))+" = "+e.v(avS(string(v))))
	}
	return out
}

// convRewrite merges exactly: read, merge in Go, measure the result, write
// it (with its exact size bound) on condition that the revision read is
// still stored, or refuse it as over the limit having written nothing.
func (d *Driver) convRewrite(ctx context.Context, op, ns string, w driver.ConversationWrite, patch []byte, maxSize int) (driver.Conversation, error) {
	if err := d.check(); err != nil {
		return driver.Conversation{}, err
	}
	for n := 0; n < maxAttempts; n++ {
		s, err := d.read(ctx, pkConv(ns, w.Key), skConv)
		if err != nil {
			return driver.Conversation{}, fail(ctx, op, err)
		}
		next := driver.Conversation{Key: w.Key, Data: driver.EmptyObject}
		if s.exists {
			if c := decodeConv(s.it); driver.Live(c.ExpiresAt, w.Now) {
				next = c
			}
		}
		if next.Data, err = driver.MergeWithin(next.Data, patch, maxSize); err != nil {
			return driver.Conversation{}, err
		}
		next.Version++
		next.UpdatedAt, next.ExpiresAt = w.Now, w.ExpiresAt
		it, err := convItem(ns, &next)
		if err != nil {
			return driver.Conversation{}, err
		}
		if err := checkSize(op, it); err != nil {
			return driver.Conversation{}, err
		}
		e := newExpr()
		ok, err := d.putIf(ctx, it, e.sameRev(s.rev), e)
		if err != nil {
			return driver.Conversation{}, fail(ctx, op, err)
		}
		if ok {
			return next, nil
		}
		if err := backoff(ctx, n); err != nil {
			return driver.Conversation{}, fail(ctx, op, err)
		}
	}
	return driver.Conversation{}, contention(op)
}

// SwapConversation implements driver.Conversations: a put conditioned on
// absence for version 0, else an update conditioned on the version.
func (d *Driver) SwapConversation(ctx context.Context, ns string, w driver.ConversationWrite, version int64, next driver.Conversation) (driver.Conversation, error) {
	const op = "SwapConversation"
	if err := d.check(); err != nil {
		return driver.Conversation{}, err
	}
	if version == 0 {
		c := driver.Conversation{Key: w.Key, Flow: next.Flow, State: next.State, Data: next.Data, Version: 1, UpdatedAt: w.Now, ExpiresAt: w.ExpiresAt}
		it, err := convItem(ns, &c)
		if err != nil {
			return driver.Conversation{}, err
		}
		ok, err := d.createFresh(ctx, it, w.Now)
		if err != nil {
			return driver.Conversation{}, fail(ctx, op, err)
		}
		if !ok {
			return driver.Conversation{}, driver.ErrConflict
		}
		return c, nil
	}
	dv, size, err := dataValue(next.Data)
	if err != nil {
		return driver.Conversation{}, err
	}
	e := newExpr()
	set, remove := setOrRemove(e, nil, nil, cvFlow, next.Flow)
	set, remove = setOrRemove(e, set, remove, cvState, next.State)
	set = append(set, e.n(cvData)+" = "+e.v(dv), e.n(cvSize)+" = "+e.v(avInt(size)),
		e.n(cvVersion)+" = "+e.n(cvVersion)+" + "+e.v(avInt(1)))
	rev := revision()
	set, remove = touch(e, set, remove, w.Now, w.ExpiresAt, rev)
	it, ok, err := d.updateLive(ctx, pkConv(ns, w.Key), skConv, w.Key, e, set, remove, w.Now, e.n(cvVersion)+" = "+e.v(avInt(version)))
	if err != nil {
		return driver.Conversation{}, fail(ctx, op, err)
	}
	if !ok {
		// A lost answer resent by the SDK fails the version condition
		// after the first request landed: our revision tells.
		if s, err := d.read(ctx, pkConv(ns, w.Key), skConv); err == nil && s.exists && s.rev == rev {
			return decodeConv(s.it), nil
		}
		return driver.Conversation{}, driver.ErrConflict
	}
	return decodeConv(it), nil
}

// DeleteConversation implements driver.Conversations.
func (d *Driver) DeleteConversation(ctx context.Context, ns, key string) error {
	return d.deleteItem(ctx, "DeleteConversation", pkConv(ns, key), skConv)
}

func (d *Driver) deleteItem(ctx context.Context, op, pk, sk string) error {
	if err := d.check(); err != nil {
		return err
	}
	_, err := d.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(d.table), Key: keyOf(pk, sk)})
	return fail(ctx, op, err)
}

// ---- thread and channel docs ------------------------------------------------

func decodeDoc(it item) driver.Doc {
	return driver.Doc{ID: getS(it, attrKey), Data: readData(it), UpdatedAt: getTime(it, cvUpdated), ExpiresAt: getTime(it, attrExp)}
}

func docItem(ns string, scope driver.Scope, doc *driver.Doc) (item, error) {
	dv, size, err := dataValue(doc.Data)
	if err != nil {
		return nil, err
	}
	it := keyOf(pkDoc(ns, scope, doc.ID), skDoc)
	it[attrType] = avS(typeDoc)
	it[docScope] = avInt(int64(scope))
	it[attrKey] = avS(doc.ID)
	it[cvData] = dv
	it[cvSize] = avInt(size)
	setTime(it, cvUpdated, doc.UpdatedAt)
	setExpiry(it, doc.ExpiresAt)
	it[attrRev] = newRev()
	return it, nil
}

// GetDoc implements driver.Threads.
func (d *Driver) GetDoc(ctx context.Context, ns string, scope driver.Scope, id string, now time.Time) (driver.Doc, bool, error) {
	const op = "GetDoc"
	if err := d.check(); err != nil {
		return driver.Doc{}, false, err
	}
	s, err := d.read(ctx, pkDoc(ns, scope, id), skDoc)
	if err != nil {
		return driver.Doc{}, false, fail(ctx, op, err)
	}
	if !s.exists {
		return driver.Doc{}, false, nil
	}
	doc := decodeDoc(s.it)
	if doc.ID != id || !driver.Live(doc.ExpiresAt, now) {
		return driver.Doc{}, false, nil
	}
	return doc, true, nil
}

// PutDoc implements driver.Threads.
func (d *Driver) PutDoc(ctx context.Context, ns string, scope driver.Scope, id string, data []byte, now, expiresAt time.Time) error {
	const op = "PutDoc"
	if err := d.check(); err != nil {
		return err
	}
	it, err := docItem(ns, scope, &driver.Doc{ID: id, Data: data, UpdatedAt: now, ExpiresAt: expiresAt})
	if err != nil {
		return err
	}
	if err := checkSize(op, it); err != nil {
		return err
	}
	_, err = d.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(d.table), Item: it})
	return fail(ctx, op, err)
}

// MergeDoc implements driver.Threads like MergeConversationData: one SET
// per member on the live doc on condition that its size bound shows the
// result fits, or a fresh doc put on condition that none is live; else
// (and for a patch too large for one expression) an exact read, merge and
// conditional write.
func (d *Driver) MergeDoc(ctx context.Context, ns string, scope driver.Scope, id string, patch []byte, maxSize int, now, expiresAt time.Time) (driver.Doc, error) {
	const op = "MergeDoc"
	if err := d.check(); err != nil {
		return driver.Doc{}, err
	}
	obj, err := members(patch)
	if err != nil {
		return driver.Doc{}, err
	}
	if err := driver.CheckMergedSize(driver.DataSize(patch), maxSize); err != nil {
		return driver.Doc{}, err
	}
	if len(obj) <= maxMergeMembers {
		doc, ok, err := d.docMergeInPlace(ctx, ns, scope, id, obj, patch, maxSize, now, expiresAt)
		if err != nil || ok {
			return doc, fail(ctx, op, err)
		}
	}
	for n := 0; n < maxAttempts; n++ {
		doc, ok, err := d.docRewrite(ctx, ns, scope, id, patch, maxSize, now, expiresAt)
		if err != nil {
			return driver.Doc{}, fail(ctx, op, err)
		}
		if ok {
			return doc, nil
		}
		if err := backoff(ctx, n); err != nil {
			return driver.Doc{}, fail(ctx, op, err)
		}
	}
	return driver.Doc{}, contention(op)
}

// docMergeInPlace is MergeDoc's usual case, as convMergeInPlace is
// MergeConversationData's.
func (d *Driver) docMergeInPlace(ctx context.Context, ns string, scope driver.Scope, id string, obj map[string]json.RawMessage, patch []byte, maxSize int, now, expiresAt time.Time) (driver.Doc, bool, error) {
	update := func() (driver.Doc, bool, error) {
		e := newExpr()
		set, remove, cond, fits := mergeSize(e, memberSets(e, obj), nil, obj, maxSize)
		if !fits {
			return driver.Doc{}, false, nil
		}
		set, remove = touch(e, set, remove, now, expiresAt, revision())
		it, ok, err := d.updateLive(ctx, pkDoc(ns, scope, id), skDoc, id, e, set, remove, now, cond)
		if err != nil || !ok {
			return driver.Doc{}, false, err
		}
		return decodeDoc(it), true, nil
	}
	if doc, ok, err := update(); err != nil || ok {
		return doc, ok, err
	}
	merged, err := driver.MergeObjects(nil, patch)
	if err != nil {
		return driver.Doc{}, false, err
	}
	doc := driver.Doc{ID: id, Data: merged, UpdatedAt: now, ExpiresAt: expiresAt}
	fi, err := docItem(ns, scope, &doc)
	if err != nil {
		return driver.Doc{}, false, err
	}
	if ok, err := d.createFresh(ctx, fi, now); err != nil || ok {
		return doc, ok, err
	}
	return update()
}

// docRewrite is one exact read-merge-write of a doc: ok false when the doc
// changed since the read, ErrTooLarge (nothing written) when the result is
// over maxSize.
func (d *Driver) docRewrite(ctx context.Context, ns string, scope driver.Scope, id string, patch []byte, maxSize int, now, expiresAt time.Time) (driver.Doc, bool, error) {
	s, err := d.read(ctx, pkDoc(ns, scope, id), skDoc)
	if err != nil {
		return driver.Doc{}, false, err
	}
	var base []byte
	if s.exists {
		if cur := decodeDoc(s.it); driver.Live(cur.ExpiresAt, now) {
			base = cur.Data
		}
	}
	merged, err := driver.MergeWithin(base, patch, maxSize)
	if err != nil {
		return driver.Doc{}, false, err
	}
	doc := driver.Doc{ID: id, Data: merged, UpdatedAt: now, ExpiresAt: expiresAt}
	it, err := docItem(ns, scope, &doc)
	if err != nil {
		return driver.Doc{}, false, err
	}
	if err := checkSize("MergeDoc", it); err != nil {
		return driver.Doc{}, false, err
	}
	e := newExpr()
	ok, err := d.putIf(ctx, it, e.sameRev(s.rev), e)
	return doc, ok, err
}

// DeleteDoc implements driver.Threads.
func (d *Driver) DeleteDoc(ctx context.Context, ns string, scope driver.Scope, id string) error {
	return d.deleteItem(ctx, "DeleteDoc", pkDoc(ns, scope, id), skDoc)
}
