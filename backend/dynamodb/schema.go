package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/botstate/botstate/driver"
)

// SchemaError says everything that keeps a table from serving botstate.
type SchemaError struct {
	Table    string
	Problems []string
}

// Error lists the problems.
func (e *SchemaError) Error() string {
	return fmt.Sprintf("dynamodb: table %q does not fit botstate: %s", e.Table, strings.Join(e.Problems, "; "))
}

// indexSpec is one global secondary index the backend needs.
type indexSpec struct {
	name, hash, rng string
}

var indexes = []indexSpec{
	{IndexPostID, attrPK, attrPostID},
	{IndexIsOpen, attrIsOpen, attrOpenSK},
}

func (ix indexSpec) create() *types.CreateGlobalSecondaryIndexAction {
	return &types.CreateGlobalSecondaryIndexAction{
		IndexName: aws.String(ix.name),
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(ix.hash), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(ix.rng), KeyType: types.KeyTypeRange},
		},
		Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
	}
}

func attrDefs(names ...string) []types.AttributeDefinition {
	out := make([]types.AttributeDefinition, len(names))
	for i, n := range names {
		out[i] = types.AttributeDefinition{AttributeName: aws.String(n), AttributeType: types.ScalarAttributeTypeS}
	}
	return out
}

// ValidateSchema implements driver.SchemaValidator: the table must exist
// with string keys pk (hash) and sk (range), both global secondary indexes
// (GSIPostID: pk, post_id; GSIIsOpen: is_open, open_sk; string keys, every
// attribute projected), and TTL enabled on the attribute ttl. It returns a
// *SchemaError listing every problem found.
func (d *Driver) ValidateSchema(ctx context.Context) error {
	const op = "ValidateSchema"
	if err := d.check(); err != nil {
		return err
	}
	out, err := d.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(d.table)})
	var nf *types.ResourceNotFoundException
	if errors.As(err, &nf) {
		return &SchemaError{Table: d.table, Problems: []string{"the table does not exist (create it, or open the URL with create=1)"}}
	}
	if err != nil {
		return fail(ctx, op, err)
	}
	problems := tableProblems(out.Table)
	ttl, err := d.db.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(d.table)})
	if err != nil {
		return fail(ctx, op, err)
	}
	problems = append(problems, ttlProblems(ttl.TimeToLiveDescription)...)
	if len(problems) > 0 {
		return &SchemaError{Table: d.table, Problems: problems}
	}
	return nil
}

// tableProblems lists what is wrong with a table's keys and indexes.
func tableProblems(td *types.TableDescription) []string {
	var out []string
	if td == nil {
		return []string{"DescribeTable returned no table"}
	}
	defs := map[string]types.ScalarAttributeType{}
	for _, a := range td.AttributeDefinitions {
		defs[aws.ToString(a.AttributeName)] = a.AttributeType
	}
	if td.TableStatus == types.TableStatusCreating {
		out = append(out, "the table is still being created")
	}
	out = append(out, keyProblems("the table", td.KeySchema, defs, attrPK, attrSK)...)
	found := map[string]types.GlobalSecondaryIndexDescription{}
	for _, g := range td.GlobalSecondaryIndexes {
		found[aws.ToString(g.IndexName)] = g
	}
	for _, ix := range indexes {
		g, ok := found[ix.name]
		if !ok {
			out = append(out, fmt.Sprintf("global secondary index %s is missing (want partition key %s, sort key %s, both strings, projection ALL)", ix.name, ix.hash, ix.rng))
			continue
		}
		what := "index " + ix.name
		out = append(out, keyProblems(what, g.KeySchema, defs, ix.hash, ix.rng)...)
		if g.Projection == nil || g.Projection.ProjectionType != types.ProjectionTypeAll {
			pt := "none"
			if g.Projection != nil {
				pt = string(g.Projection.ProjectionType)
			}
			out = append(out, fmt.Sprintf("%s projects %s, want ALL (reads take whole items from it)", what, pt))
		}
		if g.IndexStatus == types.IndexStatusCreating {
			out = append(out, what+" is still being created")
		}
	}
	return out
}

// keyProblems checks a key schema: hash then range, both strings.
func keyProblems(what string, ks []types.KeySchemaElement, defs map[string]types.ScalarAttributeType, hash, rng string) []string {
	var gotHash, gotRange string
	for _, k := range ks {
		switch k.KeyType {
		case types.KeyTypeHash:
			gotHash = aws.ToString(k.AttributeName)
		case types.KeyTypeRange:
			gotRange = aws.ToString(k.AttributeName)
		}
	}
	var out []string
	if gotHash != hash {
		out = append(out, fmt.Sprintf("%s has partition key %q, want %q", what, gotHash, hash))
	} else if t := defs[hash]; t != types.ScalarAttributeTypeS {
		out = append(out, fmt.Sprintf("%s partition key %s is of type %q, want S (string)", what, hash, t))
	}
	switch {
	case gotRange == "":
		out = append(out, fmt.Sprintf("%s has no sort key, want %q", what, rng))
	case gotRange != rng:
		out = append(out, fmt.Sprintf("%s has sort key %q, want %q", what, gotRange, rng))
	default:
		if t := defs[rng]; t != types.ScalarAttributeTypeS {
			out = append(out, fmt.Sprintf("%s sort key %s is of type %q, want S (string)", what, rng, t))
		}
	}
	return out
}

func ttlProblems(t *types.TimeToLiveDescription) []string {
	if t == nil {
		return []string{"TTL is not enabled (enable it on attribute ttl)"}
	}
	switch t.TimeToLiveStatus {
	case types.TimeToLiveStatusEnabled, types.TimeToLiveStatusEnabling:
		if a := aws.ToString(t.AttributeName); a != attrTTL {
			return []string{fmt.Sprintf("TTL is enabled on attribute %q, want %q", a, attrTTL)}
		}
		return nil
	case types.TimeToLiveStatusDisabling:
		return []string{"TTL is being disabled (enable it on attribute ttl)"}
	}
	return []string{"TTL is disabled (enable it on attribute ttl)"}
}

// EnsureSchema creates what is missing: the table (on-demand billing) with
// both indexes, an index missing from an existing table, and TTL on the
// attribute ttl; then it validates the whole. What it cannot fix (a key of
// the wrong name or type, TTL on another attribute) comes back as a
// *SchemaError.
func (d *Driver) EnsureSchema(ctx context.Context) error {
	const op = "EnsureSchema"
	if err := d.check(); err != nil {
		return err
	}
	out, err := d.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(d.table)})
	var nf *types.ResourceNotFoundException
	switch {
	case errors.As(err, &nf):
		if err := d.createTable(ctx); err != nil {
			return fail(ctx, op, err)
		}
	case err != nil:
		return fail(ctx, op, err)
	default:
		if err := d.addIndexes(ctx, out.Table); err != nil {
			return fail(ctx, op, err)
		}
	}
	if err := d.waitActive(ctx); err != nil {
		return fail(ctx, op, err)
	}
	ttl, err := d.db.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(d.table)})
	if err != nil {
		return fail(ctx, op, err)
	}
	if td := ttl.TimeToLiveDescription; td == nil || td.TimeToLiveStatus == types.TimeToLiveStatusDisabled {
		_, err := d.db.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
			TableName:               aws.String(d.table),
			TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String(attrTTL), Enabled: aws.Bool(true)},
		})
		// Another process enabling it at the same moment is fine.
		if err != nil && !strings.Contains(err.Error(), "already enabled") {
			return fail(ctx, op, err)
		}
	}
	return d.ValidateSchema(ctx)
}

func (d *Driver) createTable(ctx context.Context) error {
	in := &dynamodb.CreateTableInput{
		TableName:            aws.String(d.table),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: attrDefs(attrPK, attrSK, attrPostID, attrIsOpen, attrOpenSK),
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(attrPK), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(attrSK), KeyType: types.KeyTypeRange},
		},
	}
	for _, ix := range indexes {
		c := ix.create()
		in.GlobalSecondaryIndexes = append(in.GlobalSecondaryIndexes, types.GlobalSecondaryIndex{
			IndexName: c.IndexName, KeySchema: c.KeySchema, Projection: c.Projection,
		})
	}
	_, err := d.db.CreateTable(ctx, in)
	var inUse *types.ResourceInUseException
	if errors.As(err, &inUse) {
		return nil // created by another process meanwhile
	}
	return err
}

// addIndexes creates the indexes an existing table lacks, one at a time as
// DynamoDB requires.
func (d *Driver) addIndexes(ctx context.Context, td *types.TableDescription) error {
	have := map[string]bool{}
	for _, g := range td.GlobalSecondaryIndexes {
		have[aws.ToString(g.IndexName)] = true
	}
	for _, ix := range indexes {
		if have[ix.name] {
			continue
		}
		if err := d.waitActive(ctx); err != nil {
			return err
		}
		_, err := d.db.UpdateTable(ctx, &dynamodb.UpdateTableInput{
			TableName:                   aws.String(d.table),
			AttributeDefinitions:        attrDefs(ix.hash, ix.rng),
			GlobalSecondaryIndexUpdates: []types.GlobalSecondaryIndexUpdate{{Create: ix.create()}},
		})
		var inUse *types.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return err
		}
	}
	return nil
}

// waitActive polls until the table and its indexes are ACTIVE.
func (d *Driver) waitActive(ctx context.Context) error {
	delay := 50 * time.Millisecond
	for {
		out, err := d.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(d.table)})
		var nf *types.ResourceNotFoundException
		if err != nil && !errors.As(err, &nf) {
			return err
		}
		if err == nil && out.Table.TableStatus == types.TableStatusActive {
			ready := true
			for _, g := range out.Table.GlobalSecondaryIndexes {
				if g.IndexStatus != types.IndexStatusActive {
					ready = false
				}
			}
			if ready {
				return nil
			}
		}
		if err := driver.Sleep(ctx, delay); err != nil {
			return err
		}
		delay = min(delay*2, 2*time.Second)
	}
}
