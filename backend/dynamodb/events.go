package dynamodb

import (
	"context"
	"errors"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/botstate/botstate/driver"
)

// Event item attributes.
const (
	evStatus   = "st"
	evPayload  = "pl"
	evResult   = "res"
	evToken    = "tok"
	evAttempts = "att"
	evCreated  = "cr"
	evLease    = "lease"
	// evLastError and evRetry (LastError, RetryAt) are absent when empty,
	// as in items written before they existed.
	evLastError = "lerr"
	evRetry     = "retry"
	// evOrder, on an event inserted under an event limit, is the sort key
	// of its order item: the event counts toward the limit.
	evOrder = "ord"
	// cntN is the counter item's number of order items.
	cntN = "n"
)

// eventItem is the stored form of an event. Every event but a completed one
// carries the GSIIsOpen keys that the listings query: a partition per status
// (see recordedEvents), sorted by creation time.
func eventItem(ns string, e *driver.Event, ord, rev string) item {
	it := keyOf(pkEvent(ns, e.Key), skEvent)
	it[attrType] = avS(typeEvent)
	it[attrKey] = avS(e.Key)
	it[evStatus] = avInt(int64(e.Status))
	if e.Payload != nil {
		it[evPayload] = avB(e.Payload)
	}
	if e.Result != nil {
		it[evResult] = avB(e.Result)
	}
	if e.Token != "" {
		it[evToken] = avS(e.Token)
	}
	it[evAttempts] = avInt(int64(e.Attempts))
	if e.LastError != "" {
		it[evLastError] = avS(e.LastError)
	}
	setTime(it, evCreated, e.CreatedAt)
	setTime(it, evLease, e.LeaseUntil)
	setTime(it, evRetry, e.RetryAt)
	setExpiry(it, e.ExpiresAt)
	it[attrRev] = avN(rev)
	if ord != "" {
		it[evOrder] = avS(ord)
	}
	if p := eventPartition(ns, e.Status); p != "" {
		it[attrIsOpen] = avS(p)
		it[attrOpenSK] = avS(timeOrderSK(e.CreatedAt, e.Key))
	}
	return it
}

// eventPartition is the GSIIsOpen partition of an event with this status;
// empty for a completed one, which no listing returns.
func eventPartition(ns string, st driver.EventStatus) string {
	switch st {
	case driver.EventRecorded:
		return recordedEvents(ns)
	case driver.EventClaimed:
		return claimedEvents(ns)
	case driver.EventReleased:
		return releasedEvents(ns)
	case driver.EventFailed:
		return failedEvents(ns)
	}
	return ""
}

func decodeEvent(it item) driver.Event {
	return driver.Event{
		Key:        getS(it, attrKey),
		Status:     driver.EventStatus(getInt(it, evStatus)),
		Payload:    getB(it, evPayload),
		Result:     getB(it, evResult),
		Token:      getS(it, evToken),
		Attempts:   int(getInt(it, evAttempts)),
		LastError:  getS(it, evLastError),
		CreatedAt:  getTime(it, evCreated),
		LeaseUntil: getTime(it, evLease),
		RetryAt:    getTime(it, evRetry),
		ExpiresAt:  getTime(it, attrExp),
	}
}

// eventState is an event as stored, for writeEvent.
type eventState struct {
	stored
	ev  driver.Event
	ord string
}

func (d *Driver) readEvent(ctx context.Context, ns, key string) (eventState, error) {
	s, err := d.read(ctx, pkEvent(ns, key), skEvent)
	if err != nil || !s.exists {
		return eventState{stored: s}, err
	}
	return eventState{stored: s, ev: decodeEvent(s.it), ord: getS(s.it, evOrder)}, nil
}

// writeEvent stores next over cur, on condition that cur is still what is
// stored. A live event is replaced in place (it keeps its place under the
// limit); otherwise next is an insertion, which under a limit also writes
// its order item and counts it, and drops the order item of the expired
// event it replaces, in one transaction. ok is false when another writer
// changed the event first. The write stores revision rev: a caller whose
// write failed to answer can tell it landed by finding rev stored.
func (d *Driver) writeEvent(ctx context.Context, ns string, cur eventState, live bool, next *driver.Event, limit int, rev string) (bool, error) {
	const op = "event write"
	if live || (limit == 0 && cur.ord == "") {
		ord := ""
		if live {
			ord = cur.ord
		}
		it := eventItem(ns, next, ord, rev)
		if err := checkSize(op, it); err != nil {
			return false, err
		}
		e := newExpr()
		return d.putIf(ctx, it, e.sameRev(cur.rev), e)
	}
	newOrd := ""
	if limit > 0 {
		newOrd = orderSK(next.CreatedAt, next.Key)
	}
	it := eventItem(ns, next, newOrd, rev)
	if err := checkSize(op, it); err != nil {
		return false, err
	}
	e := newExpr()
	tx := []types.TransactWriteItem{{Put: &types.Put{
		TableName: aws.String(d.table), Item: it, ConditionExpression: aws.String(e.sameRev(cur.rev)),
		ExpressionAttributeNames: e.namesOrNil(), ExpressionAttributeValues: e.valuesOrNil(),
	}}}
	delta := 0
	if cur.ord != "" {
		tx = append(tx, d.deleteOrder(ns, cur.ord))
		delta--
	}
	if newOrd != "" {
		oi := keyOf(pkEventOrder(ns), newOrd)
		oi[attrType] = avS(typeOrder)
		oi[attrKey] = avS(next.Key)
		tx = append(tx, types.TransactWriteItem{Put: &types.Put{TableName: aws.String(d.table), Item: oi}})
		delta++
	}
	if delta != 0 {
		tx = append(tx, d.addCount(ns, delta))
	}
	_, err := d.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: tx})
	if err != nil {
		if retryable(err) {
			return false, nil
		}
		return false, err
	}
	if newOrd != "" {
		// The insertion stands whatever happens next: a caller told of an
		// error here would lose a claim it holds. An eviction cut short
		// (a cancelled context) is finished by the next insertion.
		_ = d.evict(ctx, ns, limit)
	}
	return true, nil
}

// orderSK is the sort key of an order item: insertion time, then key, so the
// oldest insertions come first.
func orderSK(created time.Time, key string) string {
	return timeSortable(created) + "#" + part(key) + "#"
}

func (d *Driver) deleteOrder(ns, ord string) types.TransactWriteItem {
	e := newExpr()
	return types.TransactWriteItem{Delete: &types.Delete{
		TableName: aws.String(d.table), Key: keyOf(pkEventOrder(ns), ord),
		ConditionExpression:      aws.String("attribute_exists(" + e.n(attrPK) + ")"),
		ExpressionAttributeNames: e.namesOrNil(),
	}}
}

func (d *Driver) addCount(ns string, delta int) types.TransactWriteItem {
	e := newExpr()
	upd := "SET " + e.n(attrType) + " = " + e.v(avS(typeCount)) + " ADD " + e.n(cntN) + " " + e.v(avInt(int64(delta)))
	return types.TransactWriteItem{Update: &types.Update{
		TableName: aws.String(d.table), Key: keyOf(pkEventCount(ns), skCount), UpdateExpression: aws.String(upd),
		ExpressionAttributeNames: e.namesOrNil(), ExpressionAttributeValues: e.valuesOrNil(),
	}}
}

// evict removes the oldest counted events while the namespace holds more
// than limit. The counter and the order items change together in every
// transaction, so the counter is exactly the number of order items; an order
// item whose event was replaced or deleted meanwhile is dropped alone.
func (d *Driver) evict(ctx context.Context, ns string, limit int) error {
	for round := 0; round < maxAttempts; round++ {
		c, err := d.read(ctx, pkEventCount(ns), skCount)
		if err != nil {
			return err
		}
		over := int(getInt(c.it, cntN)) - limit
		if over <= 0 {
			return nil
		}
		out, err := d.db.Query(ctx, &dynamodb.QueryInput{
			TableName:                 aws.String(d.table),
			KeyConditionExpression:    aws.String("#pk = :pk"),
			ExpressionAttributeNames:  map[string]string{"#pk": attrPK},
			ExpressionAttributeValues: map[string]av{":pk": avS(pkEventOrder(ns))},
			ConsistentRead:            aws.Bool(true),
			Limit:                     aws.Int32(int32(min(over, 100))),
		})
		if err != nil {
			return err
		}
		if len(out.Items) == 0 {
			return nil
		}
		progress := false
		for _, oi := range out.Items {
			done, err := d.evictOne(ctx, ns, getS(oi, attrSK), getS(oi, attrKey))
			if err != nil {
				return err
			}
			progress = progress || done
		}
		if !progress {
			if err := backoff(ctx, round); err != nil {
				return err
			}
		}
	}
	return nil
}

// evictOne removes one order item and, if it still names the stored event,
// that event. done is false when a concurrent writer got there first.
func (d *Driver) evictOne(ctx context.Context, ns, ord, key string) (bool, error) {
	e := newExpr()
	del := types.TransactWriteItem{Delete: &types.Delete{
		TableName: aws.String(d.table), Key: keyOf(pkEvent(ns, key), skEvent),
		ConditionExpression:      aws.String(e.n(evOrder) + " = " + e.v(avS(ord))),
		ExpressionAttributeNames: e.namesOrNil(), ExpressionAttributeValues: e.valuesOrNil(),
	}}
	_, err := d.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		d.deleteOrder(ns, ord), del, d.addCount(ns, -1),
	}})
	if err == nil {
		return true, nil
	}
	codes, ok := cancelled(err)
	if !ok {
		if retryable(err) {
			return false, nil
		}
		return false, err
	}
	if len(codes) == 3 && codes[0] == "None" && codes[1] == "ConditionalCheckFailed" {
		// The event was replaced or deleted: drop the stale order item.
		_, err = d.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
			d.deleteOrder(ns, ord), d.addCount(ns, -1),
		}})
		if err == nil {
			return true, nil
		}
		if retryable(err) {
			return false, nil
		}
		return false, err
	}
	return false, nil
}

// RecordEvent implements driver.Events: a conditional put, with a read only
// when something (live or expired) is stored under the key.
func (d *Driver) RecordEvent(ctx context.Context, ns string, w driver.EventWrite) (bool, error) {
	const op = "RecordEvent"
	if err := d.check(); err != nil {
		return false, err
	}
	var cur eventState
	rev := revision()
	for n := 0; n < maxAttempts; n++ {
		if n > 0 {
			var err error
			if cur, err = d.readEvent(ctx, ns, w.Key); err != nil {
				return false, fail(ctx, op, err)
			}
			if cur.rev == rev {
				// Our write landed but its answer was lost and the
				// SDK's retry found the key taken.
				return true, nil
			}
			if cur.exists && driver.Live(cur.ev.ExpiresAt, w.Now) {
				return false, nil
			}
		}
		next := driver.Event{Key: w.Key, Status: driver.EventRecorded, Payload: w.Payload, CreatedAt: w.Now, ExpiresAt: w.ExpiresAt}
		ok, err := d.writeEvent(ctx, ns, cur, false, &next, w.Limit, rev)
		if err != nil {
			return false, fail(ctx, op, err)
		}
		if ok {
			return true, nil
		}
		if n > 0 {
			if err := backoff(ctx, n); err != nil {
				return false, fail(ctx, op, err)
			}
		}
	}
	return false, contention(op)
}

// LookupEvent implements driver.Events.
func (d *Driver) LookupEvent(ctx context.Context, ns, key string, now time.Time) (driver.Event, bool, error) {
	const op = "LookupEvent"
	if err := d.check(); err != nil {
		return driver.Event{}, false, err
	}
	cur, err := d.readEvent(ctx, ns, key)
	if err != nil {
		return driver.Event{}, false, fail(ctx, op, err)
	}
	if !cur.exists || cur.ev.Key != key || !driver.Live(cur.ev.ExpiresAt, now) {
		return driver.Event{}, false, nil
	}
	return cur.ev, true, nil
}

// ForgetEvent implements driver.Events. An event that counted toward a limit
// also gives its place back.
func (d *Driver) ForgetEvent(ctx context.Context, ns, key string) error {
	const op = "ForgetEvent"
	if err := d.check(); err != nil {
		return err
	}
	out, err := d.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(d.table), Key: keyOf(pkEvent(ns, key), skEvent), ReturnValues: types.ReturnValueAllOld,
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	if ord := getS(out.Attributes, evOrder); ord != "" {
		_, err := d.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
			d.deleteOrder(ns, ord), d.addCount(ns, -1),
		}})
		// Cancelled means an eviction dropped the order item first.
		if err != nil && !retryable(err) {
			return fail(ctx, op, err)
		}
	}
	return nil
}

// ClaimEvent implements driver.Events: a conditional put for a new key;
// otherwise read, decide with driver.ApplyClaim, and write on condition that
// the revision read is still stored, retried when it is not.
func (d *Driver) ClaimEvent(ctx context.Context, ns string, r driver.ClaimRequest) (driver.ClaimReply, error) {
	const op = "ClaimEvent"
	if err := d.check(); err != nil {
		return driver.ClaimReply{}, err
	}
	var cur eventState
	var won driver.ClaimReply
	rev := revision()
	for n := 0; n < maxAttempts; n++ {
		// A Claim first bets on a new key, the common case, and skips
		// the read; a Reclaim never inserts, so it always reads.
		if n > 0 || r.Existing {
			var err error
			if cur, err = d.readEvent(ctx, ns, r.Key); err != nil {
				return driver.ClaimReply{}, fail(ctx, op, err)
			}
			if n > 0 && cur.rev == rev {
				return won, nil // our write landed; its answer was lost
			}
		}
		live := cur.exists && driver.Live(cur.ev.ExpiresAt, r.Now)
		rep, next, write, err := driver.ApplyClaim(cur.ev, live, r)
		if err != nil || !write {
			return rep, err
		}
		won = rep
		ok, err := d.writeEvent(ctx, ns, cur, live, &next, r.Limit, rev)
		if err != nil {
			return driver.ClaimReply{}, fail(ctx, op, err)
		}
		if ok {
			return rep, nil
		}
		if n > 0 {
			if err := backoff(ctx, n); err != nil {
				return driver.ClaimReply{}, fail(ctx, op, err)
			}
		}
	}
	return driver.ClaimReply{}, contention(op)
}

// change collects the SET and REMOVE clauses of one UpdateItem on an event.
type change struct {
	e           *expr
	set, remove []string
}

// newChange returns a change with room for the clauses of any event update.
func newChange() *change {
	return &change{e: newExpr(), set: make([]string, 0, 8), remove: make([]string, 0, 8)}
}

// put SETs name to v.
func (c *change) put(name string, v av) { c.set = append(c.set, c.e.n(name)+" = "+c.e.v(v)) }

// drop REMOVEs name.
func (c *change) drop(name string) { c.remove = append(c.remove, c.e.n(name)) }

// putS SETs a string attribute, or REMOVEs it when empty, as eventItem
// leaves it out.
func (c *change) putS(name, v string) {
	if v == "" {
		c.drop(name)
	} else {
		c.put(name, avS(v))
	}
}

// putTime SETs a time attribute, or REMOVEs it for the zero time.
func (c *change) putTime(name string, t time.Time) {
	if t.IsZero() {
		c.drop(name)
	} else {
		c.put(name, avTime(t))
	}
}

// putExpiry SETs exp and ttl (see setExpiry), or REMOVEs both.
func (c *change) putExpiry(t time.Time) {
	if t.IsZero() {
		c.drop(attrExp)
		c.drop(attrTTL)
	} else {
		c.put(attrExp, avTime(t))
		c.put(attrTTL, avTTL(t))
	}
}

// putStatus SETs the status and moves the event to that status's index
// partition, or out of the index when completed. The index sort key stays:
// every event in the index has one, and it depends only on creation time
// and key.
func (c *change) putStatus(ns string, st driver.EventStatus) {
	c.put(evStatus, avInt(int64(st)))
	if p := eventPartition(ns, st); p != "" {
		c.put(attrIsOpen, avS(p))
	} else {
		c.drop(attrIsOpen)
		c.drop(attrOpenSK)
	}
}

// ownedCond is the fence of driver.Owns as a condition: the event is live,
// claimed, with this token (and this key, for keys stored as a digest).
func ownedCond(e *expr, key, token string, now time.Time) string {
	return e.live(now) + " AND " + e.n(evStatus) + " = " + e.v(avInt(int64(driver.EventClaimed))) +
		" AND " + e.n(evToken) + " = " + e.v(avS(token)) + " AND " + e.n(attrKey) + " = " + e.v(avS(key))
}

// updateIf applies c to the event in one UpdateItem, with a new revision, if
// cond holds. When cond fails it reads the event back: ok is true if the read
// finds this call's revision (the answer was lost and the SDK's resend failed
// the condition), else false with the event as read, to decide from.
func (d *Driver) updateIf(ctx context.Context, ns, key, cond string, c *change) (ok bool, cur eventState, err error) {
	rev := revision()
	c.put(attrRev, avN(rev))
	_, err = d.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(d.table), Key: keyOf(pkEvent(ns, key), skEvent),
		UpdateExpression:         aws.String(updateExpr(c.set, c.remove)),
		ConditionExpression:      aws.String(cond),
		ExpressionAttributeNames: c.e.namesOrNil(), ExpressionAttributeValues: c.e.valuesOrNil(),
	})
	var cc *types.ConditionalCheckFailedException
	if !errors.As(err, &cc) {
		return err == nil, eventState{}, err
	}
	if cur, err = d.readEvent(ctx, ns, key); err != nil {
		return false, cur, err
	}
	return cur.rev == rev, cur, nil
}

// ownedUpdate applies c to the event in one UpdateItem if token still owns
// it (driver.Owns); otherwise ErrNotOwner, and nothing changes.
func (d *Driver) ownedUpdate(ctx context.Context, op, ns, key, token string, now time.Time, c *change) error {
	ok, _, err := d.updateIf(ctx, ns, key, ownedCond(c.e, key, token, now), c)
	if err != nil {
		return fail(ctx, op, err)
	}
	if !ok {
		return driver.ErrNotOwner
	}
	return nil
}

// updateEvent decides a call with a driver rule on the event as read (cur,
// the caller's read, on the first round) and writes the result in place on
// condition that the revision read is still stored, reading again and
// retrying when another writer won. The rule's error (ErrNotOwner,
// ErrNotFound, ErrConflict) comes back as it is, and nothing changes.
func (d *Driver) updateEvent(ctx context.Context, op, ns, key string, now time.Time, cur eventState,
	decide func(cur driver.Event, found bool) (driver.Event, error)) error {
	rev := revision()
	for n := 0; n < maxAttempts; n++ {
		if n > 0 {
			var err error
			if cur, err = d.readEvent(ctx, ns, key); err != nil {
				return fail(ctx, op, err)
			}
			if cur.rev == rev {
				return nil // our write landed; its answer was lost
			}
		}
		found := cur.exists && cur.ev.Key == key && driver.Live(cur.ev.ExpiresAt, now)
		next, err := decide(cur.ev, found)
		if err != nil {
			return err
		}
		// Every rule refuses an absent event, so this replaces a live one
		// in place (it keeps its place under an event limit).
		ok, err := d.writeEvent(ctx, ns, cur, true, &next, 0, rev)
		if err != nil {
			return fail(ctx, op, err)
		}
		if ok {
			return nil
		}
		if n > 0 {
			if err := backoff(ctx, n); err != nil {
				return fail(ctx, op, err)
			}
		}
	}
	return contention(op)
}

// CompleteEvent implements driver.Events: one UpdateItem whose condition is
// the fence of driver.ApplyComplete (live, claimed, with this token); a
// failed condition is ErrNotOwner.
func (d *Driver) CompleteEvent(ctx context.Context, ns, key, token string, result []byte, now, expiresAt time.Time) error {
	const op = "CompleteEvent"
	if err := d.check(); err != nil {
		return err
	}
	if len(result) > maxItemSize {
		return tooLarge(op, len(result))
	}
	c := newChange()
	c.putStatus(ns, driver.EventCompleted)
	if result != nil {
		c.put(evResult, avB(result))
	} else {
		c.drop(evResult)
	}
	c.drop(evToken)
	c.drop(evLease)
	c.drop(evRetry)
	c.putExpiry(expiresAt)
	return d.ownedUpdate(ctx, op, ns, key, token, now, c)
}

// ExtendEvent implements driver.Events like CompleteEvent: one UpdateItem
// fenced by the rule of driver.ApplyExtendEvent.
func (d *Driver) ExtendEvent(ctx context.Context, ns, key, token string, now, leaseUntil, expiresAt time.Time) error {
	const op = "ExtendEvent"
	if err := d.check(); err != nil {
		return err
	}
	c := newChange()
	c.putTime(evLease, leaseUntil)
	c.putExpiry(expiresAt)
	return d.ownedUpdate(ctx, op, ns, key, token, now, c)
}

// ReleaseEvent implements driver.Events. Its outcome turns on the stored
// attempts only at the edges, so it first bets on the common case: one
// UpdateItem fenced like CompleteEvent and conditioned on the attempts that
// give the outcome it writes (below MaxAttempts: released; with Defer, at
// least one to take back). When that condition fails, driver.ApplyReleaseEvent
// decides from the event as read (ErrNotOwner, or parking it as failed, or
// keeping Attempts at zero) and the result is written on condition that the
// revision read is still stored.
func (d *Driver) ReleaseEvent(ctx context.Context, ns string, r driver.ReleaseRequest) error {
	const op = "ReleaseEvent"
	if err := d.check(); err != nil {
		return err
	}
	c := newChange()
	e := c.e
	cond := ownedCond(e, r.Key, r.Token, r.Now)
	// probe is any claim the condition admits: the rule's answer for it is
	// its answer for the stored one, but for Attempts, which the update
	// changes relative to what is stored.
	probe := driver.Event{Key: r.Key, Status: driver.EventClaimed, Token: r.Token, Attempts: 1}
	switch {
	case r.Defer:
		att := e.n(evAttempts)
		cond += " AND " + att + " >= " + e.v(avInt(1))
		c.set = append(c.set, att+" = "+att+" - "+e.v(avInt(1)))
	case !r.Fail && r.MaxAttempts > 0:
		probe.Attempts = 0
		cond += " AND " + e.n(evAttempts) + " < " + e.v(avInt(int64(r.MaxAttempts)))
	}
	next, err := driver.ApplyReleaseEvent(probe, true, r)
	if err != nil {
		return err
	}
	c.putStatus(ns, next.Status)
	c.putS(evLastError, next.LastError)
	c.putTime(evRetry, next.RetryAt)
	c.drop(evToken)
	c.drop(evLease)
	c.putExpiry(next.ExpiresAt)
	ok, cur, err := d.updateIf(ctx, ns, r.Key, cond, c)
	if err != nil {
		return fail(ctx, op, err)
	}
	if ok {
		return nil
	}
	return d.updateEvent(ctx, op, ns, r.Key, r.Now, cur, func(cur driver.Event, found bool) (driver.Event, error) {
		return driver.ApplyReleaseEvent(cur, found, r)
	})
}

// RetryEvent implements driver.Events: one UpdateItem conditioned on a live
// failed event; when the condition fails, driver.ApplyRetryEvent decides
// from the event as read (ErrNotFound, ErrConflict, or a write conditioned
// on the revision read if it failed meanwhile).
func (d *Driver) RetryEvent(ctx context.Context, ns, key string, now, expiresAt time.Time) error {
	const op = "RetryEvent"
	if err := d.check(); err != nil {
		return err
	}
	c := newChange()
	e := c.e
	cond := e.live(now) + " AND " + e.n(evStatus) + " = " + e.v(avInt(int64(driver.EventFailed))) +
		" AND " + e.n(attrKey) + " = " + e.v(avS(key))
	next, err := driver.ApplyRetryEvent(driver.Event{Key: key, Status: driver.EventFailed}, true, expiresAt)
	if err != nil {
		return err
	}
	c.putStatus(ns, next.Status)
	c.put(evAttempts, avInt(int64(next.Attempts)))
	c.putTime(evRetry, next.RetryAt)
	c.putExpiry(next.ExpiresAt)
	ok, cur, err := d.updateIf(ctx, ns, key, cond, c)
	if err != nil {
		return fail(ctx, op, err)
	}
	if ok {
		return nil
	}
	return d.updateEvent(ctx, op, ns, key, now, cur, func(cur driver.Event, found bool) (driver.Event, error) {
		return driver.ApplyRetryEvent(cur, found, expiresAt)
	})
}

// ExpiredEvents implements driver.Events from the index partition of claimed
// events, read in creation order.
func (d *Driver) ExpiredEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.listEvents(ctx, "ExpiredEvents", ns, now, limit, func(e *driver.Event) bool {
		return e.Status == driver.EventClaimed && !e.LeaseUntil.After(now)
	}, claimedEvents)
}

// DueEvents implements driver.Events from the index partitions of claimed
// and released events, each read in creation order, merged.
func (d *Driver) DueEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.listEvents(ctx, "DueEvents", ns, now, limit, func(e *driver.Event) bool {
		return driver.EventDue(e, now)
	}, claimedEvents, releasedEvents)
}

// FailedEvents implements driver.Events from the index partition of failed
// events, read in creation order.
func (d *Driver) FailedEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.listEvents(ctx, "FailedEvents", ns, now, limit, func(e *driver.Event) bool {
		return e.Status == driver.EventFailed
	}, failedEvents)
}

// PendingEvents implements driver.Events: the index partitions of recorded,
// claimed and released events, merged.
func (d *Driver) PendingEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	return d.listEvents(ctx, "PendingEvents", ns, now, limit, driver.EventPending,
		recordedEvents, claimedEvents, releasedEvents)
}

// listEvents reads the live events keep accepts from the given index
// partitions of ns and returns the oldest limit of them.
func (d *Driver) listEvents(ctx context.Context, op, ns string, now time.Time, limit int,
	keep func(*driver.Event) bool, partitions ...func(ns string) string) ([]driver.Event, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	var out []driver.Event
	for _, p := range partitions {
		evs, err := d.openEvents(ctx, p(ns), now, limit, keep)
		if err != nil {
			return nil, fail(ctx, op, err)
		}
		out = append(out, evs...)
	}
	return driver.FirstEvents(out, limit), nil
}

// openEvents reads one index partition of unfinished events in creation
// order, keeping the live ones keep accepts, until it holds limit of them
// and every event created at the same instant as the last (the index sorts
// ties by encoded key, the listing by key).
func (d *Driver) openEvents(ctx context.Context, partition string, now time.Time, limit int, keep func(*driver.Event) bool) ([]driver.Event, error) {
	var out []driver.Event
	var start map[string]av
	for {
		q, err := d.db.Query(ctx, &dynamodb.QueryInput{
			TableName:                 aws.String(d.table),
			IndexName:                 aws.String(IndexIsOpen),
			KeyConditionExpression:    aws.String("#io = :p"),
			ExpressionAttributeNames:  map[string]string{"#io": attrIsOpen},
			ExpressionAttributeValues: map[string]av{":p": avS(partition)},
			ExclusiveStartKey:         start,
			Limit:                     aws.Int32(int32(min(max(limit, 25)+1, 1000))),
		})
		if err != nil {
			return nil, err
		}
		for _, it := range q.Items {
			if getS(it, attrType) != typeEvent {
				continue
			}
			ev := decodeEvent(it)
			if !driver.Live(ev.ExpiresAt, now) || !keep(&ev) {
				continue
			}
			if limit > 0 && len(out) >= limit && ev.CreatedAt.After(out[limit-1].CreatedAt) {
				return out, nil
			}
			out = append(out, ev)
		}
		if q.LastEvaluatedKey == nil {
			return out, nil
		}
		start = q.LastEvaluatedKey
	}
}
