package dynamodb

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/botstate/botstate/driver"
)

// batchSize is the most requests BatchWriteItem takes in one call.
const batchSize = 25

// batchWriter is the one call batchWrite needs; *dynamodb.Client has it.
type batchWriter interface {
	BatchWriteItem(ctx context.Context, in *dynamodb.BatchWriteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error)
}

// batchPolicy is how batchWrite retries the items DynamoDB left unprocessed
// (it does so when a partition is throttled, and says which).
type batchPolicy struct {
	// base is the first wait; each retry doubles it up to ceiling.
	base, ceiling time.Duration
	// attempts bounds the calls per group of 25.
	attempts int
	// sleep waits for d or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

var defaultBatchPolicy = batchPolicy{base: 20 * time.Millisecond, ceiling: 2 * time.Second, attempts: 12, sleep: driver.Sleep}

// delay is the wait before retry n (0-based): capped exponential, with
// jitter over its upper half so that writers throttled together do not
// retry together.
func (p batchPolicy) delay(n int) time.Duration {
	d := p.ceiling
	if n < 30 && p.base<<n < p.ceiling {
		d = p.base << n
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// batchWrite sends reqs to table in groups of 25, resending each group's
// unprocessed requests with capped exponential backoff until none is left,
// the attempts run out (an error wrapping ErrUnavailable) or ctx ends. It is
// not atomic: a failure can leave earlier groups written.
func batchWrite(ctx context.Context, w batchWriter, table string, reqs []types.WriteRequest, p batchPolicy) error {
	for start := 0; start < len(reqs); start += batchSize {
		pending := reqs[start:min(start+batchSize, len(reqs))]
		for n := 0; ; n++ {
			out, err := w.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{
				RequestItems: map[string][]types.WriteRequest{table: pending},
			})
			if err != nil {
				return err
			}
			pending = out.UnprocessedItems[table]
			if len(pending) == 0 {
				break
			}
			if n+1 >= p.attempts {
				return &opError{op: "BatchWriteItem", msg: fmt.Sprintf("%d items still unprocessed after %d attempts", len(pending), p.attempts),
					errs: []error{driver.ErrUnavailable}}
			}
			if err := p.sleep(ctx, p.delay(n)); err != nil {
				return err
			}
		}
	}
	return nil
}

func putRequest(it item) types.WriteRequest {
	return types.WriteRequest{PutRequest: &types.PutRequest{Item: it}}
}

func deleteRequest(key item) types.WriteRequest {
	return types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: key}}
}
