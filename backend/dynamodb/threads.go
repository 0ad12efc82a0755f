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

// Attributes of subscriptions and cache items.
const (
	subCreated = "cr"
	cacheValue = "v"
	cacheList  = "vs"
)

// ---- subscriptions ----------------------------------------------------------------

// Subscriptions of a namespace share one partition whose sort key is the
// thread id itself, unescaped (ids are at most 1024 bytes, DynamoDB's sort
// key limit), so a query lists them in bytewise order as the contract asks.

func subItem(ns string, s *driver.Subscription) item {
	it := keyOf(pkSubs(ns), s.Thread)
	it[attrType] = avS(typeSub)
	setTime(it, subCreated, s.CreatedAt)
	setExpiry(it, s.ExpiresAt)
	return it
}

func decodeSub(it item) driver.Subscription {
	return driver.Subscription{Thread: getS(it, attrSK), CreatedAt: getTime(it, subCreated), ExpiresAt: getTime(it, attrExp)}
}

// Subscribe implements driver.Threads: an update of the live subscription's
// expiry (its creation time kept), or a fresh one put on condition that
// none is live.
func (d *Driver) Subscribe(ctx context.Context, ns, thread string, now, expiresAt time.Time) error {
	const op = "Subscribe"
	if err := d.check(); err != nil {
		return err
	}
	for n := 0; n < maxAttempts; n++ {
		e := newExpr()
		var set, remove []string
		if expiresAt.IsZero() {
			remove = []string{e.n(attrExp), e.n(attrTTL)}
		} else {
			set = []string{e.n(attrExp) + " = " + e.v(avTime(expiresAt)), e.n(attrTTL) + " = " + e.v(avTTL(expiresAt))}
		}
		_, err := d.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(d.table), Key: keyOf(pkSubs(ns), thread),
			UpdateExpression:         aws.String(updateExpr(set, remove)),
			ConditionExpression:      aws.String(e.live(now)),
			ExpressionAttributeNames: e.namesOrNil(), ExpressionAttributeValues: e.valuesOrNil(),
		})
		var cc *types.ConditionalCheckFailedException
		if err == nil {
			return nil
		}
		if !errors.As(err, &cc) {
			return fail(ctx, op, err)
		}
		ok, err := d.createFresh(ctx, subItem(ns, &driver.Subscription{Thread: thread, CreatedAt: now, ExpiresAt: expiresAt}), now)
		if err != nil {
			return fail(ctx, op, err)
		}
		if ok {
			return nil
		}
		if err := backoff(ctx, n); err != nil {
			return fail(ctx, op, err)
		}
	}
	return contention(op)
}

// Unsubscribe implements driver.Threads.
func (d *Driver) Unsubscribe(ctx context.Context, ns, thread string) error {
	return d.deleteItem(ctx, "Unsubscribe", pkSubs(ns), thread)
}

// IsSubscribed implements driver.Threads.
func (d *Driver) IsSubscribed(ctx context.Context, ns, thread string, now time.Time) (bool, error) {
	const op = "IsSubscribed"
	if err := d.check(); err != nil {
		return false, err
	}
	s, err := d.read(ctx, pkSubs(ns), thread)
	if err != nil {
		return false, fail(ctx, op, err)
	}
	return s.exists && driver.Live(getTime(s.it, attrExp), now), nil
}

// ListSubscriptions implements driver.Threads with a query of the
// namespace's subscription partition from after on.
func (d *Driver) ListSubscriptions(ctx context.Context, ns, after string, limit int, now time.Time) ([]driver.Subscription, error) {
	const op = "ListSubscriptions"
	if err := d.check(); err != nil {
		return nil, err
	}
	e := newExpr()
	kc := e.n(attrPK) + " = " + e.v(avS(pkSubs(ns)))
	if after != "" {
		kc += " AND " + e.n(attrSK) + " > " + e.v(avS(after))
	}
	var out []driver.Subscription
	var start map[string]av
	for len(out) < limit {
		q, err := d.db.Query(ctx, &dynamodb.QueryInput{
			TableName: aws.String(d.table), KeyConditionExpression: aws.String(kc),
			ExpressionAttributeNames: e.namesOrNil(), ExpressionAttributeValues: e.valuesOrNil(),
			ConsistentRead: aws.Bool(true), ExclusiveStartKey: start,
			Limit: aws.Int32(int32(min(limit-len(out)+16, 1000))),
		})
		if err != nil {
			return nil, fail(ctx, op, err)
		}
		for _, it := range q.Items {
			if s := decodeSub(it); driver.Live(s.ExpiresAt, now) && len(out) < limit {
				out = append(out, s)
			}
		}
		if q.LastEvaluatedKey == nil {
			break
		}
		start = q.LastEvaluatedKey
	}
	return out, nil
}

// ---- cache --------------------------------------------------------------------

func valueItem(ns, key string, v []byte, expiresAt time.Time) item {
	it := keyOf(pkCache(ns, key), skValue)
	it[attrType] = avS(typeValue)
	it[attrKey] = avS(key)
	it[cacheValue] = avB(v)
	setExpiry(it, expiresAt)
	return it
}

func listItem(ns, key string, vals [][]byte, expiresAt time.Time) item {
	it := keyOf(pkCache(ns, key), skList)
	it[attrType] = avS(typeList)
	it[attrKey] = avS(key)
	l := make([]av, len(vals))
	for i, v := range vals {
		l[i] = avB(v)
	}
	it[cacheList] = &types.AttributeValueMemberL{Value: l}
	setExpiry(it, expiresAt)
	it[attrRev] = newRev()
	return it
}

func listValues(it item) [][]byte {
	l, ok := it[cacheList].(*types.AttributeValueMemberL)
	if !ok {
		return nil
	}
	out := make([][]byte, 0, len(l.Value))
	for _, v := range l.Value {
		if b, ok := v.(*types.AttributeValueMemberB); ok {
			if b.Value == nil {
				out = append(out, []byte{})
			} else {
				out = append(out, b.Value)
			}
		}
	}
	return out
}

// CacheGet implements driver.Threads.
func (d *Driver) CacheGet(ctx context.Context, ns, key string, now time.Time) ([]byte, bool, error) {
	const op = "CacheGet"
	if err := d.check(); err != nil {
		return nil, false, err
	}
	s, err := d.read(ctx, pkCache(ns, key), skValue)
	if err != nil {
		return nil, false, fail(ctx, op, err)
	}
	if !s.exists || getS(s.it, attrKey) != key || !driver.Live(getTime(s.it, attrExp), now) {
		return nil, false, nil
	}
	return getB(s.it, cacheValue), true, nil
}

// CacheSet implements driver.Threads; onlyIfAbsent is a put conditioned on
// no live value.
func (d *Driver) CacheSet(ctx context.Context, ns, key string, value []byte, now, expiresAt time.Time, onlyIfAbsent bool) (bool, error) {
	const op = "CacheSet"
	if err := d.check(); err != nil {
		return false, err
	}
	it := valueItem(ns, key, value, expiresAt)
	if err := checkSize(op, it); err != nil {
		return false, err
	}
	cond := ""
	e := newExpr()
	if onlyIfAbsent {
		cond = e.absent(now)
	}
	ok, err := d.putIf(ctx, it, cond, e)
	return ok, fail(ctx, op, err)
}

// CacheDelete implements driver.Threads: both items in one transaction.
func (d *Driver) CacheDelete(ctx context.Context, ns, key string) error {
	const op = "CacheDelete"
	if err := d.check(); err != nil {
		return err
	}
	pk := pkCache(ns, key)
	for n := 0; n < maxAttempts; n++ {
		_, err := d.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
			{Delete: &types.Delete{TableName: aws.String(d.table), Key: keyOf(pk, skValue)}},
			{Delete: &types.Delete{TableName: aws.String(d.table), Key: keyOf(pk, skList)}},
		}})
		if err == nil || !retryable(err) {
			return fail(ctx, op, err)
		}
		if err := backoff(ctx, n); err != nil {
			return fail(ctx, op, err)
		}
	}
	return contention(op)
}

// ListAppend implements driver.Threads. A live list with room takes the
// value with one UpdateItem (list_append, conditioned on its length); a
// full, absent or expired one is read, trimmed in Go and written back on
// condition that the revision read is still stored.
func (d *Driver) ListAppend(ctx context.Context, ns, key string, value []byte, maxLen int, now, expiresAt time.Time) (int, error) {
	const op = "ListAppend"
	if err := d.check(); err != nil {
		return 0, err
	}
	pk := pkCache(ns, key)
	for n := 0; n < maxAttempts; n++ {
		e := newExpr()
		vs := e.n(cacheList)
		set := []string{vs + " = list_append(" + vs + ", " + e.v(&types.AttributeValueMemberL{Value: []av{avB(value)}}) + ")",
			e.n(attrRev) + " = " + e.v(newRev())}
		var remove []string
		if expiresAt.IsZero() {
			remove = []string{e.n(attrExp), e.n(attrTTL)}
		} else {
			set = append(set, e.n(attrExp)+" = "+e.v(avTime(expiresAt)), e.n(attrTTL)+" = "+e.v(avTTL(expiresAt)))
		}
		it, ok, err := d.updateLive(ctx, pk, skList, key, e, set, remove, now, "size("+vs+") < "+e.v(avInt(int64(maxLen))))
		if err != nil {
			return 0, fail(ctx, op, err)
		}
		if ok {
			return len(listValues(it)), nil
		}
		s, err := d.read(ctx, pk, skList)
		if err != nil {
			return 0, fail(ctx, op, err)
		}
		var vals [][]byte
		if s.exists && driver.Live(getTime(s.it, attrExp), now) {
			vals = listValues(s.it)
		}
		vals = append(vals, value)
		if len(vals) > maxLen {
			vals = vals[len(vals)-maxLen:]
		}
		li := listItem(ns, key, vals, expiresAt)
		if err := checkSize(op, li); err != nil {
			return 0, err
		}
		e = newExpr()
		ok, err = d.putIf(ctx, li, e.sameRev(s.rev), e)
		if err != nil {
			return 0, fail(ctx, op, err)
		}
		if ok {
			return len(vals), nil
		}
		if err := backoff(ctx, n); err != nil {
			return 0, fail(ctx, op, err)
		}
	}
	return 0, contention(op)
}

// ListRange implements driver.Threads.
func (d *Driver) ListRange(ctx context.Context, ns, key string, now time.Time) ([][]byte, error) {
	const op = "ListRange"
	if err := d.check(); err != nil {
		return nil, err
	}
	s, err := d.read(ctx, pkCache(ns, key), skList)
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	if !s.exists || getS(s.it, attrKey) != key || !driver.Live(getTime(s.it, attrExp), now) {
		return nil, nil
	}
	return listValues(s.it), nil
}
