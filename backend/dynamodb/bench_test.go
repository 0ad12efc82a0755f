package dynamodb

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/statetest"
)

// The benchmarks compare botstate's operations with the bare DynamoDB call
// each one boils down to, against the same server in the same run:
//
//	BOTSTATE_DYNAMODB_URL=... go test -run '^$' -bench . ./backend/dynamodb/

func benchURL(b *testing.B) string {
	u := os.Getenv("BOTSTATE_DYNAMODB_URL")
	if u == "" {
		b.Skip("BOTSTATE_DYNAMODB_URL is not set")
	}
	warm.Do(func() { warmUp(b, u) })
	return u
}

var warm sync.Once

// warmUp sends a few thousand writes first: a fresh DynamoDB Local runs in
// a cold JVM for its first seconds, which would slow whichever benchmark
// happens to run first.
func warmUp(b *testing.B, raw string) {
	u, _ := url.Parse(raw)
	drv, err := Open(context.Background(), u, driver.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer drv.Close()
	d := drv.(*Driver)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				k := fmt.Sprintf("warm-%d-%d-%d", time.Now().UnixNano(), g, i)
				_, _ = d.db.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(d.table), Item: item{attrPK: avS(k), attrSK: avS("x")}})
			}
		}(g)
	}
	wg.Wait()
}

var benchSeq atomic.Int64

// BenchmarkBaselinePutIfAbsent is the floor for a Claim of a new key: one
// PutItem conditioned on attribute_not_exists, from the SDK directly.
func BenchmarkBaselinePutIfAbsent(b *testing.B) {
	raw := benchURL(b)
	u, _ := url.Parse(raw)
	drv, err := Open(context.Background(), u, driver.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer drv.Close()
	d := drv.(*Driver)
	// Keys unique across runs: the table outlives the process.
	run := time.Now().UnixNano()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			k := fmt.Sprintf("bench-%d-%d", run, benchSeq.Add(1))
			_, err := d.db.PutItem(ctx, &dynamodb.PutItemInput{
				TableName: aws.String(d.table), Item: item{attrPK: avS(k), attrSK: avS("x"), "v": avS(k)},
				ConditionExpression:      aws.String("attribute_not_exists(#pk)"),
				ExpressionAttributeNames: map[string]string{"#pk": attrPK},
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkClaim is Events.Claim of new keys through the portable API.
func BenchmarkClaim(b *testing.B) {
	ev := benchNamespace(b).Events()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := ev.Claim(ctx, fmt.Sprintf("k%d", benchSeq.Add(1)), []byte("payload"), time.Minute); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAcquireRelease is a lock round trip (two optimistic
// read-and-write steps) on keys of its own.
func BenchmarkAcquireRelease(b *testing.B) {
	lk := benchNamespace(b).Locks()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		key := fmt.Sprintf("thread-%d", benchSeq.Add(1))
		for pb.Next() {
			r, err := lk.Acquire(ctx, key, "me", nil, botstate.LockPolicy{TTL: time.Minute})
			if err != nil || r.Status != botstate.Acquired {
				b.Errorf("acquire: %v %v", r.Status, err)
				return
			}
			if _, err := lk.Release(ctx, r.Lock); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkClaimComplete is a Claim of a new key and its Complete: the
// conditional put and the fenced UpdateItem of every handled event.
func BenchmarkClaimComplete(b *testing.B) {
	ev := benchNamespace(b).Events()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			c, err := ev.Claim(ctx, fmt.Sprintf("k%d", benchSeq.Add(1)), []byte("payload"), time.Minute)
			if err != nil {
				b.Error(err)
				return
			}
			if err := ev.Complete(ctx, c.Token, []byte("result")); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchNamespace opens the benchmark's store in a namespace of its own,
// closed when b ends.
func benchNamespace(b *testing.B) *botstate.Store {
	st, err := botstate.Open(context.Background(), benchURL(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st.Namespace(fmt.Sprintf("bench-%d", time.Now().UnixNano()))
}

// BenchmarkListings: the recovery listings with no completed events held,
// and with a hundred thousand (statetest.BenchmarkListings; DynamoDB Local
// loads them in under a minute on this machine, a million in about ten).
func BenchmarkListings(b *testing.B) {
	st, err := botstate.Open(context.Background(), benchURL(b))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	statetest.BenchmarkListings(b, st, 0, 100_000)
}

// BenchmarkSnapshotMemory: export and migrate (to a namespace view of the
// same table) of a hundred thousand items, peak live heap
// (statetest.BenchmarkSnapshotMemory; a million takes DynamoDB Local on
// this machine about ten minutes to load).
func BenchmarkSnapshotMemory(b *testing.B) {
	st, err := botstate.Open(context.Background(), benchURL(b))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	statetest.BenchmarkSnapshotMemory(b, st, st, 100_000)
}

// BenchmarkBrowse: a dashboard page of conversations and of locks at the
// start and the end of 10 k of each (statetest.BenchmarkBrowse; pages come
// from Export, driver.Browse's fallback, a walk of the namespace).
func BenchmarkBrowse(b *testing.B) {
	st, err := botstate.Open(context.Background(), benchURL(b))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	statetest.BenchmarkBrowse(b, st, 10_000)
}
