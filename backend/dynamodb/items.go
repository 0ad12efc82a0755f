package dynamodb

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The item helpers every domain's file uses: a consistent read, a
// conditional put, the test for a write that lost a race, and the joining
// of update expressions.

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
