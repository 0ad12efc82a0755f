package dynamodb

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/botstate/botstate/driver"
)

// Incident item attributes. The unique id goes in attrKey.
const (
	inChannel = "ch"
	inCorr    = "corr"
	inOpen    = "open"
	inBody    = "body"
	inTime    = "ts"
)

func alertItem(ns string, a *driver.AlertRecord) item {
	it := keyOf(pkChannel(ns, a.Channel), skAlert(a.UniqueID))
	it[attrType] = avS(typeAlert)
	it[inChannel] = avS(a.Channel)
	it[attrKey] = avS(a.UniqueID)
	if !a.Timestamp.IsZero() {
		// Text, not a number: an alert's timestamp keeps its nanoseconds
		// and its zone offset is normalised to UTC by the caller already.
		ts, _ := a.Timestamp.MarshalText()
		it[inTime] = avS(string(ts))
	}
	it[inBody] = avB(a.Body)
	setExpiry(it, a.ExpiresAt)
	return it
}

func decodeAlert(it item) driver.AlertRecord {
	a := driver.AlertRecord{Channel: getS(it, inChannel), UniqueID: getS(it, attrKey), Body: getB(it, inBody), ExpiresAt: getTime(it, attrExp)}
	if ts := getS(it, inTime); ts != "" {
		_ = a.Timestamp.UnmarshalText([]byte(ts))
		a.Timestamp = a.Timestamp.UTC()
	}
	return a
}

// issueItem is an issue: identified in the table by (channel, unique id);
// an open one is also in GSIIsOpen under its namespace, sorted by channel,
// correlation id and unique id, and one with a post id is in GSIPostID.
func issueItem(ns string, r *driver.IssueRecord) item {
	it := keyOf(pkChannel(ns, r.Channel), skIssue(r.UniqueID))
	it[attrType] = avS(typeIssue)
	it[inChannel] = avS(r.Channel)
	it[attrKey] = avS(r.UniqueID)
	it[inCorr] = avS(r.CorrelationID)
	if r.PostID != "" {
		it[attrPostID] = avS(r.PostID)
	}
	it[inOpen] = avBool(r.Open)
	if r.Open {
		it[attrIsOpen] = avS(openIssues(ns))
		it[attrOpenSK] = avS(openIssueSK(r.Channel, r.CorrelationID, r.UniqueID))
	}
	it[inBody] = avB(r.Body)
	setExpiry(it, r.ExpiresAt)
	return it
}

func decodeIssue(it item) driver.IssueRecord {
	return driver.IssueRecord{
		Channel: getS(it, inChannel), UniqueID: getS(it, attrKey), CorrelationID: getS(it, inCorr),
		PostID: getS(it, attrPostID), Open: getBool(it, inOpen), Body: getB(it, inBody), ExpiresAt: getTime(it, attrExp),
	}
}

func mappingItem(ns string, m *driver.MoveMappingRecord) item {
	it := keyOf(pkChannel(ns, m.Channel), skMapping(m.CorrelationID))
	it[attrType] = avS(typeMapping)
	it[inChannel] = avS(m.Channel)
	it[inCorr] = avS(m.CorrelationID)
	if m.UniqueID != "" {
		it[attrKey] = avS(m.UniqueID)
	}
	it[inBody] = avB(m.Body)
	return it
}

func decodeMapping(it item) driver.MoveMappingRecord {
	return driver.MoveMappingRecord{Channel: getS(it, inChannel), CorrelationID: getS(it, inCorr), UniqueID: getS(it, attrKey), Body: getB(it, inBody)}
}

func stateItem(ns, channel string, body []byte) item {
	it := keyOf(pkChannel(ns, channel), skProcState)
	it[attrType] = avS(typeState)
	it[inChannel] = avS(channel)
	it[inBody] = avB(body)
	return it
}

func (d *Driver) put(ctx context.Context, op string, it item) error {
	if err := d.check(); err != nil {
		return err
	}
	if err := checkSize(op, it); err != nil {
		return err
	}
	_, err := d.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(d.table), Item: it})
	return fail(ctx, op, err)
}

// SaveAlert implements driver.Incidents.
func (d *Driver) SaveAlert(ctx context.Context, ns string, a driver.AlertRecord) error {
	return d.put(ctx, "SaveAlert", alertItem(ns, &a))
}

// SaveIssues implements driver.Incidents: one PutItem for one issue,
// BatchWriteItem in groups of 25 for more, retrying unprocessed items with
// capped exponential backoff. Two issues with the same identity in one call
// are saved as the later one, as sequential saves would.
func (d *Driver) SaveIssues(ctx context.Context, ns string, issues []driver.IssueRecord) error {
	const op = "SaveIssues"
	if err := d.check(); err != nil {
		return err
	}
	if len(issues) == 1 {
		return d.put(ctx, op, issueItem(ns, &issues[0]))
	}
	last := make(map[[2]string]int, len(issues))
	for i := range issues {
		last[[2]string{issues[i].Channel, issues[i].UniqueID}] = i
	}
	reqs := make([]types.WriteRequest, 0, len(last))
	for i := range issues {
		if last[[2]string{issues[i].Channel, issues[i].UniqueID}] != i {
			continue
		}
		it := issueItem(ns, &issues[i])
		if err := checkSize(op, it); err != nil {
			return err
		}
		reqs = append(reqs, putRequest(it))
	}
	return fail(ctx, op, batchWrite(ctx, d.db, d.table, reqs, defaultBatchPolicy))
}

// MoveIssue implements driver.Incidents: the delete from the source channel
// and the put in the target are one TransactWriteItems.
func (d *Driver) MoveIssue(ctx context.Context, ns string, issue driver.IssueRecord, source string) error {
	const op = "MoveIssue"
	if err := d.check(); err != nil {
		return err
	}
	it := issueItem(ns, &issue)
	if err := checkSize(op, it); err != nil {
		return err
	}
	for n := 0; n < maxAttempts; n++ {
		_, err := d.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
			{Delete: &types.Delete{TableName: aws.String(d.table), Key: keyOf(pkChannel(ns, source), skIssue(issue.UniqueID))}},
			{Put: &types.Put{TableName: aws.String(d.table), Item: it}},
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

// queryIssues runs a query and keeps the live issues match accepts, sorted
// by unique id.
func (d *Driver) queryIssues(ctx context.Context, in *dynamodb.QueryInput, now time.Time, match func(*driver.IssueRecord) bool) ([]driver.IssueRecord, error) {
	var out []driver.IssueRecord
	for {
		q, err := d.db.Query(ctx, in)
		if err != nil {
			return nil, err
		}
		for _, it := range q.Items {
			if getS(it, attrType) != typeIssue {
				continue
			}
			r := decodeIssue(it)
			if driver.Live(r.ExpiresAt, now) && match(&r) {
				out = append(out, r)
			}
		}
		if q.LastEvaluatedKey == nil {
			break
		}
		in.ExclusiveStartKey = q.LastEvaluatedKey
	}
	slices.SortFunc(out, func(a, b driver.IssueRecord) int { return strings.Compare(a.UniqueID, b.UniqueID) })
	return out, nil
}

// openQuery reads the namespace's open issues whose index sort key starts
// with prefix (all of them for "").
func (d *Driver) openQuery(ns, prefix string) *dynamodb.QueryInput {
	e := newExpr()
	kc := e.n(attrIsOpen) + " = " + e.v(avS(openIssues(ns)))
	if prefix != "" {
		kc += " AND begins_with(" + e.n(attrOpenSK) + ", " + e.v(avS(prefix)) + ")"
	}
	return &dynamodb.QueryInput{
		TableName: aws.String(d.table), IndexName: aws.String(IndexIsOpen), KeyConditionExpression: aws.String(kc),
		ExpressionAttributeNames: e.namesOrNil(), ExpressionAttributeValues: e.valuesOrNil(),
	}
}

// FindOpenIssues implements driver.Incidents with GSIIsOpen, matching the
// prefix "<channel>#<correlation id>#" and then the full ids.
func (d *Driver) FindOpenIssues(ctx context.Context, ns, channel, correlationID string, now time.Time) ([]driver.IssueRecord, error) {
	const op = "FindOpenIssues"
	if err := d.check(); err != nil {
		return nil, err
	}
	out, err := d.queryIssues(ctx, d.openQuery(ns, openCorr(channel, correlationID)), now, func(r *driver.IssueRecord) bool {
		return r.Open && r.Channel == channel && r.CorrelationID == correlationID
	})
	return out, fail(ctx, op, err)
}

// FindIssuesByPostID implements driver.Incidents with GSIPostID.
func (d *Driver) FindIssuesByPostID(ctx context.Context, ns, channel, postID string, now time.Time) ([]driver.IssueRecord, error) {
	const op = "FindIssuesByPostID"
	if err := d.check(); err != nil {
		return nil, err
	}
	e := newExpr()
	in := &dynamodb.QueryInput{
		TableName: aws.String(d.table), IndexName: aws.String(IndexPostID),
		KeyConditionExpression:   aws.String(e.n(attrPK) + " = " + e.v(avS(pkChannel(ns, channel))) + " AND " + e.n(attrPostID) + " = " + e.v(avS(postID))),
		ExpressionAttributeNames: e.namesOrNil(), ExpressionAttributeValues: e.valuesOrNil(),
	}
	out, err := d.queryIssues(ctx, in, now, func(r *driver.IssueRecord) bool {
		return r.Channel == channel && r.PostID == postID
	})
	return out, fail(ctx, op, err)
}

// ActiveChannels implements driver.Incidents by reading the namespace's
// open issues from GSIIsOpen.
func (d *Driver) ActiveChannels(ctx context.Context, ns string, now time.Time) ([]string, error) {
	const op = "ActiveChannels"
	if err := d.check(); err != nil {
		return nil, err
	}
	in := d.openQuery(ns, "")
	in.ExpressionAttributeNames["#ch"] = inChannel
	in.ExpressionAttributeNames["#t"] = attrType
	in.ExpressionAttributeNames["#exp"] = attrExp
	in.ExpressionAttributeNames["#open"] = inOpen
	in.ProjectionExpression = aws.String("#ch, #t, #exp, #open")
	seen := map[string]bool{}
	_, err := d.queryIssues(ctx, in, now, func(r *driver.IssueRecord) bool {
		if r.Open {
			seen[r.Channel] = true
		}
		return false
	})
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	out := make([]string, 0, len(seen))
	for ch := range seen {
		out = append(out, ch)
	}
	slices.Sort(out)
	return out, nil
}

// OpenIssuesInChannel implements driver.Incidents with GSIIsOpen, matching
// the prefix "<channel>#".
func (d *Driver) OpenIssuesInChannel(ctx context.Context, ns, channel string, now time.Time) ([]driver.IssueRecord, error) {
	const op = "OpenIssuesInChannel"
	if err := d.check(); err != nil {
		return nil, err
	}
	out, err := d.queryIssues(ctx, d.openQuery(ns, openChannel(channel)), now, func(r *driver.IssueRecord) bool {
		return r.Open && r.Channel == channel
	})
	return out, fail(ctx, op, err)
}

// SaveMoveMapping implements driver.Incidents.
func (d *Driver) SaveMoveMapping(ctx context.Context, ns string, m driver.MoveMappingRecord) error {
	return d.put(ctx, "SaveMoveMapping", mappingItem(ns, &m))
}

// FindMoveMapping implements driver.Incidents.
func (d *Driver) FindMoveMapping(ctx context.Context, ns, channel, correlationID string) ([]byte, bool, error) {
	const op = "FindMoveMapping"
	if err := d.check(); err != nil {
		return nil, false, err
	}
	s, err := d.read(ctx, pkChannel(ns, channel), skMapping(correlationID))
	if err != nil {
		return nil, false, fail(ctx, op, err)
	}
	if !s.exists || getS(s.it, inChannel) != channel || getS(s.it, inCorr) != correlationID {
		return nil, false, nil
	}
	return getB(s.it, inBody), true, nil
}

// DeleteMoveMapping implements driver.Incidents.
func (d *Driver) DeleteMoveMapping(ctx context.Context, ns, channel, correlationID string) error {
	return d.deleteItem(ctx, "DeleteMoveMapping", pkChannel(ns, channel), skMapping(correlationID))
}

// SaveProcessingState implements driver.Incidents.
func (d *Driver) SaveProcessingState(ctx context.Context, ns, channel string, body []byte) error {
	return d.put(ctx, "SaveProcessingState", stateItem(ns, channel, body))
}

// FindProcessingState implements driver.Incidents.
func (d *Driver) FindProcessingState(ctx context.Context, ns, channel string) ([]byte, bool, error) {
	const op = "FindProcessingState"
	if err := d.check(); err != nil {
		return nil, false, err
	}
	s, err := d.read(ctx, pkChannel(ns, channel), skProcState)
	if err != nil {
		return nil, false, fail(ctx, op, err)
	}
	if !s.exists || getS(s.it, inChannel) != channel {
		return nil, false, nil
	}
	return getB(s.it, inBody), true, nil
}

// DropIncidents implements driver.Incidents. Channels are partitions of
// their own, so it scans the table for the namespace's channel partitions
// and deletes what it finds in batches of 25: a cost in proportion to the
// whole table, acceptable for what is a test helper.
func (d *Driver) DropIncidents(ctx context.Context, ns string) error {
	const op = "DropIncidents"
	if err := d.check(); err != nil {
		return err
	}
	var reqs []types.WriteRequest
	err := d.scan(ctx, ns+"#CH#", []string{attrPK, attrSK}, func(it item) error {
		reqs = append(reqs, deleteRequest(keyOf(getS(it, attrPK), getS(it, attrSK))))
		return nil
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	return fail(ctx, op, batchWrite(ctx, d.db, d.table, reqs, defaultBatchPolicy))
}

// scan reads every item whose partition key starts with prefix (every
// item for ""), with strongly consistent reads, keeping only attrs when
// given.
func (d *Driver) scan(ctx context.Context, prefix string, attrs []string, fn func(item) error) error {
	e := newExpr()
	in := &dynamodb.ScanInput{TableName: aws.String(d.table), ConsistentRead: aws.Bool(true)}
	if prefix != "" {
		in.FilterExpression = aws.String("begins_with(" + e.n(attrPK) + ", " + e.v(avS(prefix)) + ")")
	}
	if len(attrs) > 0 {
		ps := make([]string, len(attrs))
		for i, a := range attrs {
			ps[i] = e.n(a)
		}
		in.ProjectionExpression = aws.String(strings.Join(ps, ", "))
	}
	in.ExpressionAttributeNames, in.ExpressionAttributeValues = e.namesOrNil(), e.valuesOrNil()
	for {
		out, err := d.db.Scan(ctx, in)
		if err != nil {
			return err
		}
		for _, it := range out.Items {
			if err := fn(it); err != nil {
				return err
			}
		}
		if out.LastEvaluatedKey == nil {
			return nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}
