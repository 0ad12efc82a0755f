package dynamodb

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/botstate/botstate/driver"
)

// Export implements driver.Snapshots with a strongly consistent scan of the
// table, filtered to the namespace's partitions when ns is set (every
// partition key starts with "<ns>#"). Its cost is in proportion to the whole
// table.
func (d *Driver) Export(ctx context.Context, ns string, now time.Time, emit func(*driver.Record) error) error {
	const op = "Export"
	if err := d.check(); err != nil {
		return err
	}
	prefix := ""
	if ns != "" {
		prefix = ns + "#"
	}
	err := d.scan(ctx, prefix, nil, func(it item) error {
		rec, ok, err := record(it, now)
		if err != nil || !ok {
			return err
		}
		return emit(&rec)
	})
	return fail(ctx, op, err)
}

// record turns a stored item into its snapshot record; ok is false for an
// expired item and for the event limit's bookkeeping items.
func record(it item, now time.Time) (driver.Record, bool, error) {
	ns, _, _ := strings.Cut(getS(it, attrPK), "#")
	exp := getTime(it, attrExp)
	t := getS(it, attrType)
	if t != typeLock && !driver.Live(exp, now) {
		return driver.Record{}, false, nil
	}
	switch t {
	case typeEvent:
		return driver.EventRecord(ns, decodeEvent(it)), true, nil
	case typeConv:
		return driver.ConversationRecord(ns, decodeConv(it)), true, nil
	case typeSub:
		s := decodeSub(it)
		return driver.Record{Kind: driver.KindSubscription, NS: ns, Key: s.Thread, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt}, true, nil
	case typeDoc:
		doc := decodeDoc(it)
		return driver.Record{Kind: driver.DocKind(driver.Scope(getInt(it, docScope))), NS: ns, Key: doc.ID,
			Data: doc.Data, UpdatedAt: doc.UpdatedAt, ExpiresAt: doc.ExpiresAt}, true, nil
	case typeValue:
		return driver.Record{Kind: driver.KindCacheValue, NS: ns, Key: getS(it, attrKey), Payload: getB(it, cacheValue), ExpiresAt: exp}, true, nil
	case typeList:
		return driver.Record{Kind: driver.KindCacheList, NS: ns, Key: getS(it, attrKey), Values: listValues(it), ExpiresAt: exp}, true, nil
	case typeLock:
		st, err := decodeLock(it)
		if err != nil {
			return driver.Record{}, false, err
		}
		driver.PruneLock(&st, now)
		if driver.LockIdle(&st) && !driver.Live(st.ExpiresAt, now) {
			return driver.Record{}, false, nil
		}
		return driver.LockRecord(ns, st), true, nil
	case typeAlert:
		return driver.AlertRecordOf(ns, decodeAlert(it)), true, nil
	case typeIssue:
		return driver.IssueRecordOf(ns, decodeIssue(it)), true, nil
	case typeMapping:
		return driver.MoveMappingRecordOf(ns, decodeMapping(it)), true, nil
	case typeState:
		return driver.Record{Kind: driver.KindProcessingState, NS: ns, Channel: getS(it, inChannel), Body: string(getB(it, inBody))}, true, nil
	}
	return driver.Record{}, false, nil
}

// recordItem is the item a snapshot record becomes.
func recordItem(r *driver.Record) (item, error) {
	switch r.Kind {
	case driver.KindEvent:
		ev, ok := r.Event()
		if !ok {
			return nil, fmt.Errorf("event %q: unknown status %q", r.Key, r.Status)
		}
		return eventItem(r.NS, &ev, "", revision()), nil
	case driver.KindConversation:
		c := r.Conversation()
		return convItem(r.NS, &c)
	case driver.KindSubscription:
		return subItem(r.NS, &driver.Subscription{Thread: r.Key, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}), nil
	case driver.KindThreadState, driver.KindChannelState:
		scope := driver.ScopeThread
		if r.Kind == driver.KindChannelState {
			scope = driver.ScopeChannel
		}
		return docItem(r.NS, scope, &driver.Doc{ID: r.Key, Data: r.Data, UpdatedAt: r.UpdatedAt, ExpiresAt: r.ExpiresAt})
	case driver.KindCacheValue:
		v := r.Payload
		if v == nil {
			v = []byte{}
		}
		return valueItem(r.NS, r.Key, v, r.ExpiresAt), nil
	case driver.KindCacheList:
		return listItem(r.NS, r.Key, r.Values, r.ExpiresAt), nil
	case driver.KindLock:
		st := r.Lock()
		return lockItem(r.NS, &st, revision())
	case driver.KindAlert:
		a := r.Alert()
		return alertItem(r.NS, &a), nil
	case driver.KindIssue:
		is := r.Issue()
		return issueItem(r.NS, &is), nil
	case driver.KindMoveMapping:
		m := r.MoveMapping()
		return mappingItem(r.NS, &m), nil
	case driver.KindProcessingState:
		return stateItem(r.NS, r.Channel, []byte(r.Body)), nil
	}
	return nil, fmt.Errorf("unknown kind %q", r.Kind)
}

// Transaction limits: actions per TransactWriteItems and total bytes.
const (
	maxTxItems = 100
	maxTxBytes = 4 << 20
)

// Import implements driver.Snapshots. A snapshot of up to 100 items and
// 4 MB is written in one TransactWriteItems, all or nothing; a larger one
// in BatchWriteItem groups of 25, which a failure can leave half-written.
// Imported events do not count toward an event limit (as in mem).
func (d *Driver) Import(ctx context.Context, recs []driver.Record) error {
	const op = "Import"
	if err := d.check(); err != nil {
		return err
	}
	items := make([]item, 0, len(recs))
	total := 0
	for i := range recs {
		it, err := recordItem(&recs[i])
		if err != nil {
			return &opError{op: op, msg: err.Error(), errs: []error{driver.ErrInvalidArgument}}
		}
		n := itemSize(it)
		if n > maxItemSize {
			return tooLarge(op, n)
		}
		total += n
		items = append(items, it)
	}
	if len(items) <= maxTxItems && total <= maxTxBytes {
		tx := make([]types.TransactWriteItem, len(items))
		for i, it := range items {
			tx[i] = types.TransactWriteItem{Put: &types.Put{TableName: aws.String(d.table), Item: it}}
		}
		for n := 0; n < maxAttempts; n++ {
			_, err := d.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: tx})
			if err == nil || !retryable(err) {
				return fail(ctx, op, err)
			}
			if err := backoff(ctx, n); err != nil {
				return fail(ctx, op, err)
			}
		}
		return contention(op)
	}
	reqs := make([]types.WriteRequest, len(items))
	for i, it := range items {
		reqs[i] = putRequest(it)
	}
	return fail(ctx, op, batchWrite(ctx, d.db, d.table, reqs, defaultBatchPolicy))
}
