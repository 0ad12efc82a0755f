package dynamodb_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/backend/dynamodb"
	"github.com/botstate/botstate/statetest"
)

// TestStoreFromTheApplicationsClient: a store on a DynamoDB client the
// application built from its own aws.Config creates its table when asked,
// works, and leaves the client usable when it closes.
func TestStoreFromTheApplicationsClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, err := url.Parse(statetest.BackendURL(t, "BOTSTATE_DYNAMODB_URL"))
	if err != nil {
		t.Fatal(err)
	}
	endpoint := u.Query().Get("endpoint")
	// The application's client is the test's to close: its keep-alive
	// connection would outlive the test (the store leaves it open).
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cfg := aws.Config{Region: "eu-west-1", Credentials: credentials.NewStaticCredentialsProvider("app", "app", ""),
		HTTPClient: &http.Client{Transport: tr}}
	client := awsdynamodb.NewFromConfig(cfg, func(o *awsdynamodb.Options) { o.BaseEndpoint = aws.String(endpoint) })
	table := fmt.Sprintf("fromclient-%d", time.Now().UnixNano())
	if _, err := dynamodb.FromClient(ctx, client, table, false); err != nil {
		t.Fatalf("without create, FromClient does not call DynamoDB: %v", err)
	}
	drv, err := dynamodb.FromClient(ctx, client, table, true)
	if err != nil {
		t.Fatal(err)
	}
	st, err := botstate.OpenDriver(drv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Events().Claim(ctx, "e1", []byte("p"), time.Minute)
	if err != nil || c.Status != botstate.Claimed {
		t.Fatalf("claim: %v %v", c.Status, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := client.DescribeTable(ctx, &awsdynamodb.DescribeTableInput{TableName: aws.String(table)})
	if err != nil || aws.ToInt64(out.Table.ItemCount) < 0 {
		t.Errorf("the client after the store closed: %v", err)
	}
	if _, err := dynamodb.FromClient(ctx, nil, table, false); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("nil client: %v", err)
	}
	if _, err := dynamodb.FromClient(ctx, client, "x", false); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("a bad table name: %v", err)
	}
}
