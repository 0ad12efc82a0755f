package redis

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/botstate/botstate/driver"
)

// Incidents live in one slot per namespace (tag {ns:i}), so a move between
// channels and an issue save with its index updates are single scripts.
// Composite fields start with lp(channel) = len(channel)+":"+channel, which
// no other channel's entry can begin with.

type incKeys struct {
	issues, issueExp, open, corr, post, alerts, alertExp, mappings, states string
}

func (d *Driver) incKeys(ns string) incKeys {
	b := d.nsBase(ns, domIncident)
	return incKeys{issues: b + "is", issueExp: b + "ix", open: b + "op", corr: b + "co", post: b + "po",
		alerts: b + "al", alertExp: b + "ax", mappings: b + "mm", states: b + "ps"}
}

func (k incKeys) issueScriptKeys() []string {
	return []string{k.issues, k.issueExp, k.open, k.corr, k.post}
}

func (k incKeys) all() []string {
	return []string{k.issues, k.issueExp, k.open, k.corr, k.post, k.alerts, k.alertExp, k.mappings, k.states}
}

func lp(s string) string { return strconv.Itoa(len(s)) + ":" + s }

// splitLP undoes lp(a)+b.
func splitLP(f string) (a, b string, ok bool) {
	c := strings.IndexByte(f, ':')
	if c <= 0 {
		return "", "", false
	}
	n, err := strconv.Atoi(f[:c])
	if err != nil || n < 0 || c+1+n > len(f) {
		return "", "", false
	}
	return f[c+1 : c+1+n], f[c+1+n:], true
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func issueArgs(r *driver.IssueRecord) []string {
	return []string{r.Channel, r.UniqueID, r.CorrelationID, r.PostID, boolArg(r.Open), us(r.ExpiresAt), string(r.Body)}
}

// unpackIssue reads pk{open, expiresAt, correlation, post, body}.
func unpackIssue(channel, uid, v string) (driver.IssueRecord, error) {
	f, err := unpack(v, 5)
	if err != nil {
		return driver.IssueRecord{}, err
	}
	exp, err := fromUS(f[1])
	if err != nil {
		return driver.IssueRecord{}, err
	}
	return driver.IssueRecord{Channel: channel, UniqueID: uid, CorrelationID: f[2], PostID: f[3], Open: f[0] == "1",
		Body: []byte(f[4]), ExpiresAt: exp}, nil
}

// SaveAlert implements driver.Incidents in one script (the alert, its
// expiry index entry, and garbage collection of lapsed alerts).
func (d *Driver) SaveAlert(ctx context.Context, ns string, a driver.AlertRecord) error {
	k := d.incKeys(ns)
	ts, err := a.Timestamp.MarshalText()
	if err != nil {
		return err
	}
	_, err = d.run(ctx, saveAlertScript, []string{k.alerts, k.alertExp},
		[]string{"", a.Channel, a.UniqueID, us(a.ExpiresAt), string(ts), string(a.Body)})
	return err
}

// SaveIssues implements driver.Incidents: every issue and its index entries
// in one script.
func (d *Driver) SaveIssues(ctx context.Context, ns string, issues []driver.IssueRecord) error {
	if len(issues) == 0 {
		return d.check()
	}
	args := make([]string, 0, 1+7*len(issues))
	args = append(args, "")
	for i := range issues {
		args = append(args, issueArgs(&issues[i])...)
	}
	_, err := d.run(ctx, saveIssuesScript, d.incKeys(ns).issueScriptKeys(), args)
	return err
}

// MoveIssue implements driver.Incidents in one script: both channels' entries
// share the namespace's slot, so the issue is never in both or neither.
func (d *Driver) MoveIssue(ctx context.Context, ns string, issue driver.IssueRecord, source string) error {
	args := append([]string{"", source}, issueArgs(&issue)...)
	_, err := d.run(ctx, moveIssueScript, d.incKeys(ns).issueScriptKeys(), args)
	return err
}

func (d *Driver) findIssues(ctx context.Context, ns, mode, channel, id string, now time.Time) ([]driver.IssueRecord, error) {
	out, err := d.run(ctx, findIssuesScript, d.incKeys(ns).issueScriptKeys(), []string{us(now), mode, channel, id})
	if err != nil {
		return nil, err
	}
	var recs []driver.IssueRecord
	for i := 0; i+1 < len(out); i += 2 {
		r, err := unpackIssue(channel, out[i], out[i+1])
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	// The index orders by uid bytewise already; sort anyway, as a
	// cheap guard of the contract.
	sort.Slice(recs, func(i, j int) bool { return recs[i].UniqueID < recs[j].UniqueID })
	return recs, nil
}

// FindOpenIssues implements driver.Incidents from the correlation index.
func (d *Driver) FindOpenIssues(ctx context.Context, ns, channel, correlationID string, now time.Time) ([]driver.IssueRecord, error) {
	return d.findIssues(ctx, ns, "corr", channel, correlationID, now)
}

// FindIssuesByPostID implements driver.Incidents from the post index.
func (d *Driver) FindIssuesByPostID(ctx context.Context, ns, channel, postID string, now time.Time) ([]driver.IssueRecord, error) {
	return d.findIssues(ctx, ns, "post", channel, postID, now)
}

// OpenIssuesInChannel implements driver.Incidents from the open index.
func (d *Driver) OpenIssuesInChannel(ctx context.Context, ns, channel string, now time.Time) ([]driver.IssueRecord, error) {
	return d.findIssues(ctx, ns, "open", channel, "", now)
}

// ActiveChannels implements driver.Incidents in one script that walks the
// open index a channel at a time.
func (d *Driver) ActiveChannels(ctx context.Context, ns string, now time.Time) ([]string, error) {
	out, err := d.run(ctx, activeChannelsScript, d.incKeys(ns).issueScriptKeys(), []string{us(now)})
	if err != nil || len(out) == 0 {
		return nil, err
	}
	sort.Strings(out)
	return out, nil
}

// SaveMoveMapping implements driver.Incidents with one HSET.
func (d *Driver) SaveMoveMapping(ctx context.Context, ns string, m driver.MoveMappingRecord) error {
	if err := d.check(); err != nil {
		return err
	}
	k := d.incKeys(ns)
	return d.fail(ctx, d.do(ctx, d.client.B().Hset().Key(k.mappings).FieldValue().
		FieldValue(lp(m.Channel)+m.CorrelationID, pack(m.UniqueID, string(m.Body))).Build()).Error())
}

// FindMoveMapping implements driver.Incidents with one HGET.
func (d *Driver) FindMoveMapping(ctx context.Context, ns, channel, correlationID string) ([]byte, bool, error) {
	if err := d.check(); err != nil {
		return nil, false, err
	}
	v, err := d.do(ctx, d.client.B().Hget().Key(d.incKeys(ns).mappings).Field(lp(channel)+correlationID).Build()).ToString()
	if err != nil {
		if isNil(err) {
			return nil, false, nil
		}
		return nil, false, d.fail(ctx, err)
	}
	f, err := unpack(v, 2)
	if err != nil {
		return nil, false, err
	}
	return []byte(f[1]), true, nil
}

// DeleteMoveMapping implements driver.Incidents with one HDEL.
func (d *Driver) DeleteMoveMapping(ctx context.Context, ns, channel, correlationID string) error {
	if err := d.check(); err != nil {
		return err
	}
	return d.fail(ctx, d.do(ctx, d.client.B().Hdel().Key(d.incKeys(ns).mappings).Field(lp(channel)+correlationID).Build()).Error())
}

// SaveProcessingState implements driver.Incidents with one HSET.
func (d *Driver) SaveProcessingState(ctx context.Context, ns, channel string, body []byte) error {
	if err := d.check(); err != nil {
		return err
	}
	return d.fail(ctx, d.do(ctx, d.client.B().Hset().Key(d.incKeys(ns).states).FieldValue().
		FieldValue(channel, string(body)).Build()).Error())
}

// FindProcessingState implements driver.Incidents with one HGET.
func (d *Driver) FindProcessingState(ctx context.Context, ns, channel string) ([]byte, bool, error) {
	if err := d.check(); err != nil {
		return nil, false, err
	}
	v, err := d.do(ctx, d.client.B().Hget().Key(d.incKeys(ns).states).Field(channel).Build()).ToString()
	if err != nil {
		if isNil(err) {
			return nil, false, nil
		}
		return nil, false, d.fail(ctx, err)
	}
	return []byte(v), true, nil
}

// DropIncidents implements driver.Incidents: the namespace's incident keys
// are a fixed set in one slot, dropped by one DEL.
func (d *Driver) DropIncidents(ctx context.Context, ns string) error {
	return d.del(ctx, d.incKeys(ns).all()...)
}
