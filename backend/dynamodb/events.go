package dynamodb

import (
	"context"
	"errors"
	"slices"
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
	// evOrder, on an event inserted under an event limit, is the sort key
	// of its order item: the event counts toward the limit.
	evOrder = "ord"
	// cntN is the counter item's number of order items.
	cntN = "n"
)

// eventItem is the stored form of an event. Unfinished events carry the
// GSIIsOpen keys that Pending and Expired query.
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
	setTime(it, evCreated, e.CreatedAt)
	setTime(it, evLease, e.LeaseUntil)
	setExpiry(it, e.ExpiresAt)
	it[attrRev] = avN(rev)
	if ord != "" {
		it[evOrder] = avS(ord)
	}
	switch e.Status {
	case driver.EventClaimed:
		it[attrIsOpen] = avS(claimedEvents(ns))
	case driver.EventRecorded, driver.EventReleased:
		it[attrIsOpen] = avS(pendingEvents(ns))
	}
	if _, ok := it[attrIsOpen]; ok {
		it[attrOpenSK] = avS(eventOrderSK(e.CreatedAt, e.Key))
	}
	return it
}

func decodeEvent(it item) driver.Event {
	return driver.Event{
		Key:        getS(it, attrKey),
		Status:     driver.EventStatus(getInt(it, evStatus)),
		Payload:    getB(it, evPayload),
		Result:     getB(it, evResult),
		Token:      getS(it, evToken),
		Attempts:   int(getInt(it, evAttempts)),
		CreatedAt:  getTime(it, evCreated),
		LeaseUntil: getTime(it, evLease),
		ExpiresAt:  getTime(it, attrExp),
	}
}

// stored is an item as read for an optimistic write: whether one exists
// (live or not), its revision, and the item.
type stored struct {
	exists bool
	rev    string
	it     item
}

// read fetches an item with a strongly consistent read.
func (d *Driver) read(ctx context.Context, pk, sk string) (stored, error) {
	out, err := d.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(d.table), Key: keyOf(pk, sk), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return stored{}, err
	}
	if out.Item == nil {
		return stored{}, nil
	}
	return stored{exists: true, rev: getN(out.Item, attrRev), it: out.Item}, nil
}

// retryable reports a write that lost to a concurrent one: a failed
// condition, or a transaction conflict. The caller reads again and retries.
func retryable(err error) bool {
	var cc *types.ConditionalCheckFailedException
	var conflict *types.TransactionConflictException
	if errors.As(err, &cc) || errors.As(err, &conflict) {
		return true
	}
	codes, ok := cancelled(err)
	if !ok {
		return false
	}
	// Only a lost race: any other reason (a validation error, an item
	// collection over its limit) would fail again the same way.
	for _, c := range codes {
		switch c {
		case "", "None", "ConditionalCheckFailed", "TransactionConflict":
		default:
			return false
		}
	}
	return true
}

// cancelled returns the reason codes of a cancelled transaction.
func cancelled(err error) ([]string, bool) {
	var tc *types.TransactionCanceledException
	if !errors.As(err, &tc) {
		return nil, false
	}
	codes := make([]string, len(tc.CancellationReasons))
	for i, r := range tc.CancellationReasons {
		codes[i] = aws.ToString(r.Code)
	}
	return codes, true
}

// putIf writes it if cond holds; ok is false when the condition failed.
func (d *Driver) putIf(ctx context.Context, it item, cond string, e *expr) (bool, error) {
	in := &dynamodb.PutItemInput{TableName: aws.String(d.table), Item: it}
	if cond != "" {
		in.ConditionExpression = aws.String(cond)
		in.ExpressionAttributeNames, in.ExpressionAttributeValues = e.namesOrNil(), e.valuesOrNil()
	}
	_, err := d.db.PutItem(ctx, in)
	if err != nil && retryable(err) {
		return false, nil
	}
	return err == nil, err
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

// finish is CompleteEvent and ReleaseEvent: one UpdateItem whose condition
// is driver.ApplyFinish's rule (live, claimed, with this token).
func (d *Driver) finish(ctx context.Context, op, ns, key, token string, complete bool, result []byte, now, expiresAt time.Time) error {
	if err := d.check(); err != nil {
		return err
	}
	e := newExpr()
	cond := e.live(now) + " AND " + e.n(evStatus) + " = " + e.v(avInt(int64(driver.EventClaimed))) +
		" AND " + e.n(evToken) + " = " + e.v(avS(token)) + " AND " + e.n(attrKey) + " = " + e.v(avS(key))
	rev := revision()
	set := []string{e.n(attrRev) + " = " + e.v(avN(rev))}
	remove := []string{e.n(evToken), e.n(evLease)}
	if complete {
		if len(result) > maxItemSize {
			return tooLarge(op, len(result))
		}
		set = append(set, e.n(evStatus)+" = "+e.v(avInt(int64(driver.EventCompleted))))
		if result != nil {
			set = append(set, e.n(evResult)+" = "+e.v(avB(result)))
		} else {
			remove = append(remove, e.n(evResult))
		}
		if expiresAt.IsZero() {
			remove = append(remove, e.n(attrExp), e.n(attrTTL))
		} else {
			set = append(set, e.n(attrExp)+" = "+e.v(avTime(expiresAt)), e.n(attrTTL)+" = "+e.v(avTTL(expiresAt)))
		}
		remove = append(remove, e.n(attrIsOpen), e.n(attrOpenSK))
	} else {
		set = append(set, e.n(evStatus)+" = "+e.v(avInt(int64(driver.EventReleased))),
			e.n(attrIsOpen)+" = "+e.v(avS(pendingEvents(ns))))
	}
	_, err := d.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(d.table), Key: keyOf(pkEvent(ns, key), skEvent),
		UpdateExpression:         aws.String(updateExpr(set, remove)),
		ConditionExpression:      aws.String(cond),
		ExpressionAttributeNames: e.namesOrNil(), ExpressionAttributeValues: e.valuesOrNil(),
	})
	var cc *types.ConditionalCheckFailedException
	if errors.As(err, &cc) {
		// The SDK resends a request whose answer was lost; the resent
		// one fails its condition when the first one landed.
		if s, rerr := d.read(ctx, pkEvent(ns, key), skEvent); rerr == nil && s.rev == rev {
			return nil
		}
		return driver.ErrNotOwner
	}
	return fail(ctx, op, err)
}

// updateExpr joins SET and REMOVE clauses.
func updateExpr(set, remove []string) string {
	s := ""
	if len(set) > 0 {
		s = "SET " + join(set)
	}
	if len(remove) > 0 {
		if s != "" {
			s += " "
		}
		s += "REMOVE " + join(remove)
	}
	return s
}

func join(parts []string) string {
	n := 0
	for _, p := range parts {
		n += len(p) + 2
	}
	b := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, p...)
	}
	return string(b)
}

// CompleteEvent implements driver.Events.
func (d *Driver) CompleteEvent(ctx context.Context, ns, key, token string, result []byte, now, expiresAt time.Time) error {
	return d.finish(ctx, "CompleteEvent", ns, key, token, true, result, now, expiresAt)
}

// ReleaseEvent implements driver.Events.
func (d *Driver) ReleaseEvent(ctx context.Context, ns, key, token string, now time.Time) error {
	return d.finish(ctx, "ReleaseEvent", ns, key, token, false, nil, now, time.Time{})
}

// ExpiredEvents implements driver.Events from the index partition of claimed
// events, read in creation order.
func (d *Driver) ExpiredEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	const op = "ExpiredEvents"
	if err := d.check(); err != nil {
		return nil, err
	}
	out, err := d.openEvents(ctx, claimedEvents(ns), now, limit, func(e *driver.Event) bool {
		return e.Status == driver.EventClaimed && !e.LeaseUntil.After(now)
	})
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	return firstEvents(out, limit), nil
}

// PendingEvents implements driver.Events: both index partitions of
// unfinished events, merged.
func (d *Driver) PendingEvents(ctx context.Context, ns string, now time.Time, limit int) ([]driver.Event, error) {
	const op = "PendingEvents"
	if err := d.check(); err != nil {
		return nil, err
	}
	keep := func(e *driver.Event) bool { return e.Status != driver.EventCompleted }
	a, err := d.openEvents(ctx, pendingEvents(ns), now, limit, keep)
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	b, err := d.openEvents(ctx, claimedEvents(ns), now, limit, keep)
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	return firstEvents(append(a, b...), limit), nil
}

func firstEvents(evs []driver.Event, limit int) []driver.Event {
	slices.SortFunc(evs, func(a, b driver.Event) int {
		switch {
		case driver.EventBefore(&a, &b):
			return -1
		case driver.EventBefore(&b, &a):
			return 1
		}
		return 0
	})
	if limit > 0 && len(evs) > limit {
		evs = evs[:limit]
	}
	return evs
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
