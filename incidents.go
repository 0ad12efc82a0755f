package botstate

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/botstate/botstate/driver"
)

// Incidents is the store of an alert manager — alerts grouped into issues,
// posted to channels and moved between them — method for method the shape of
// Slack Manager's database interface, so a thin adapter makes any botstate
// backend a Slack Manager database.
//
// Bodies are kept byte for byte (callers hash them). Open issues never
// expire; closed issues expire after the issue retention (default 180 days),
// alerts after the alert retention (default 30 days). Identifiers match
// exactly: channel "C1" never finds "C12", correlation "abc" never "abcd".
type Incidents struct{ s *Store }

// Incidents returns the namespace's incident store.
func (s *Store) Incidents() *Incidents { return &Incidents{s} }

// Issue is an issue as the alert manager models it: opaque JSON plus the
// accessors the store indexes by.
type Issue interface {
	ChannelID() string
	UniqueID() string
	GetCorrelationID() string
	IsOpen() bool
	CurrentPostID() string
	MarshalJSON() ([]byte, error)
}

// MoveMapping records that issues of a correlation id moved away from a
// channel; ChannelID is the original channel.
type MoveMapping interface {
	ChannelID() string
	UniqueID() string
	GetCorrelationID() string
	MarshalJSON() ([]byte, error)
}

// Alert is an alert as the alert manager models it: opaque JSON plus the
// accessors the store keys it by, as Issue is for issues, so an alert
// manager's own alert type is saved as it is.
type Alert interface {
	ChannelID() string
	UniqueID() string
	GetTimestamp() time.Time
	MarshalJSON() ([]byte, error)
}

// BasicAlert is an Alert for callers without an alert type of their own:
// its channel, unique id, timestamp and JSON body.
type BasicAlert struct {
	Channel   string
	ID        string
	Timestamp time.Time
	Body      json.RawMessage
}

func (a *BasicAlert) ChannelID() string            { return a.Channel }
func (a *BasicAlert) UniqueID() string             { return a.ID }
func (a *BasicAlert) GetTimestamp() time.Time      { return a.Timestamp }
func (a *BasicAlert) MarshalJSON() ([]byte, error) { return a.Body, nil }

// ChannelProcessingState is when a channel was last processed. Every field is
// kept exactly, timestamps to the nanosecond.
type ChannelProcessingState struct {
	ChannelID           string    `json:"channelId"`
	Created             time.Time `json:"created"`
	LastChannelActivity time.Time `json:"lastChannelActivity"`
	LastProcessed       time.Time `json:"lastProcessed"`
	OpenIssues          int       `json:"openIssues"`
}

// MaxCorrelationIDLen bounds correlation ids, in bytes: they may hold
// anything (emoji, newlines, quotes, '#'), so the bound is looser than
// MaxKeyLen.
const MaxCorrelationIDLen = 4096

func checkCorrelation(op, id string) error {
	switch {
	case id == "":
		return invalid(op, "correlation id is empty")
	case len(id) > MaxCorrelationIDLen:
		return tooLarge(op, "correlation id is %d bytes, over the %d-byte limit", len(id), MaxCorrelationIDLen)
	case !utf8.ValidString(id):
		return invalid(op, "correlation id is not valid UTF-8")
	case strings.IndexByte(id, 0) >= 0:
		return invalid(op, "correlation id holds a NUL byte")
	}
	return nil
}

// Init prepares the store. Unless skipSchemaValidation, a backend with a
// schema (tables, indexes, TTL settings) checks it and says what is wrong.
func (in *Incidents) Init(ctx context.Context, skipSchemaValidation bool) error {
	const op = "Incidents.Init"
	if err := in.s.begin(ctx, op); err != nil {
		return err
	}
	if skipSchemaValidation {
		return nil
	}
	if v, ok := in.s.core.drv.(driver.SchemaValidator); ok {
		return wrap(op, v.ValidateSchema(ctx))
	}
	return nil
}

// SaveAlert creates or replaces the alert (channel, unique id), its body
// what MarshalJSON returns, kept byte for byte. Saving the same alert twice
// is fine.
func (in *Incidents) SaveAlert(ctx context.Context, alert Alert) error {
	const op = "Incidents.SaveAlert"
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if isNil(alert) {
		return invalid(op, "nil alert")
	}
	channel, id := alert.ChannelID(), alert.UniqueID()
	if err := checkKey(op, "channel id", channel); err != nil {
		return err
	}
	if err := checkKey(op, "alert unique id", id); err != nil {
		return err
	}
	body, err := alert.MarshalJSON()
	if err != nil {
		return invalid(op, "the alert's MarshalJSON failed: %v", err)
	}
	if err := s.checkJSON(op, "alert body", body); err != nil {
		return err
	}
	now := s.now()
	return wrap(op, s.core.drv.SaveAlert(ctx, s.ns, driver.AlertRecord{
		Channel: channel, UniqueID: id, Timestamp: alert.GetTimestamp().UTC(),
		Body: body, ExpiresAt: after(now, s.core.cfg.alertRetention),
	}))
}

func (in *Incidents) issueRecord(op string, issue Issue, now time.Time) (driver.IssueRecord, error) {
	if isNil(issue) {
		return driver.IssueRecord{}, invalid(op, "nil issue")
	}
	r := driver.IssueRecord{Channel: issue.ChannelID(), UniqueID: issue.UniqueID(),
		CorrelationID: issue.GetCorrelationID(), PostID: issue.CurrentPostID(), Open: issue.IsOpen()}
	if err := checkKey(op, "issue channel id", r.Channel); err != nil {
		return r, err
	}
	if err := checkKey(op, "issue unique id", r.UniqueID); err != nil {
		return r, err
	}
	if err := checkCorrelation(op, r.CorrelationID); err != nil {
		return r, err
	}
	if err := checkText(op, "post id", r.PostID); err != nil {
		return r, err
	}
	body, err := issue.MarshalJSON()
	if err != nil {
		return r, invalid(op, "issue %q does not marshal: %v", r.UniqueID, err)
	}
	if err := in.s.checkJSON(op, "issue body", body); err != nil {
		return r, err
	}
	r.Body = body
	if !r.Open {
		r.ExpiresAt = after(now, in.s.core.cfg.issueRetention)
	}
	return r, nil
}

// SaveIssue creates or replaces the issue (its channel, its unique id).
func (in *Incidents) SaveIssue(ctx context.Context, issue Issue) error {
	return in.saveIssues(ctx, "Incidents.SaveIssue", []Issue{issue})
}

// SaveIssues saves every issue. A nil or malformed issue refuses the whole
// call before anything is written.
func (in *Incidents) SaveIssues(ctx context.Context, issues ...Issue) error {
	return in.saveIssues(ctx, "Incidents.SaveIssues", issues)
}

func (in *Incidents) saveIssues(ctx context.Context, op string, issues []Issue) error {
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if len(issues) == 0 {
		return nil
	}
	now := s.now()
	recs := make([]driver.IssueRecord, len(issues))
	for i, is := range issues {
		r, err := in.issueRecord(op, is, now)
		if err != nil {
			return err
		}
		recs[i] = r
	}
	return wrap(op, s.core.drv.SaveIssues(ctx, s.ns, recs))
}

// MoveIssue moves issue, atomically, from sourceChannelID to
// targetChannelID: it is never in both channels, nor in none. The issue must
// already name the target as its channel; source and target must differ. An
// issue that is not in the source channel is simply saved in the target.
func (in *Incidents) MoveIssue(ctx context.Context, issue Issue, sourceChannelID, targetChannelID string) error {
	const op = "Incidents.MoveIssue"
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := checkKey(op, "source channel id", sourceChannelID); err != nil {
		return err
	}
	if err := checkKey(op, "target channel id", targetChannelID); err != nil {
		return err
	}
	if sourceChannelID == targetChannelID {
		return invalid(op, "source and target channel are both %q", sourceChannelID)
	}
	r, err := in.issueRecord(op, issue, s.now())
	if err != nil {
		return err
	}
	if r.Channel != targetChannelID {
		return invalid(op, "issue's channel %q is not the target %q", r.Channel, targetChannelID)
	}
	return wrap(op, s.core.drv.MoveIssue(ctx, s.ns, r, sourceChannelID))
}

func (in *Incidents) findOne(op string, found []driver.IssueRecord, err error, what string) (string, json.RawMessage, error) {
	if err != nil {
		return "", nil, wrap(op, err)
	}
	switch len(found) {
	case 0:
		return "", nil, nil
	case 1:
		return found[0].UniqueID, json.RawMessage(found[0].Body), nil
	}
	return "", nil, &Error{Op: op, Msg: fmt.Sprintf("%d issues match %s", len(found), what), Err: ErrConflict}
}

// FindOpenIssueByCorrelationID returns the open issue of channelID with
// correlationID: ("", nil, nil) when there is none, ErrConflict when more
// than one matches.
func (in *Incidents) FindOpenIssueByCorrelationID(ctx context.Context, channelID, correlationID string) (string, json.RawMessage, error) {
	const op = "Incidents.FindOpenIssueByCorrelationID"
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return "", nil, err
	}
	if err := checkKey(op, "channel id", channelID); err != nil {
		return "", nil, err
	}
	if err := checkCorrelation(op, correlationID); err != nil {
		return "", nil, err
	}
	found, err := s.core.drv.FindOpenIssues(ctx, s.ns, channelID, correlationID, s.now())
	return in.findOne(op, found, err, "the correlation id")
}

// FindIssueBySlackPostID returns the issue of channelID posted as postID:
// ("", nil, nil) when there is none, ErrConflict when more than one matches.
func (in *Incidents) FindIssueBySlackPostID(ctx context.Context, channelID, postID string) (string, json.RawMessage, error) {
	const op = "Incidents.FindIssueBySlackPostID"
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return "", nil, err
	}
	if err := checkKey(op, "channel id", channelID); err != nil {
		return "", nil, err
	}
	if err := checkKey(op, "post id", postID); err != nil {
		return "", nil, err
	}
	found, err := s.core.drv.FindIssuesByPostID(ctx, s.ns, channelID, postID, s.now())
	return in.findOne(op, found, err, "the post id")
}

// FindActiveChannels returns each channel with at least one open issue,
// once, sorted; an empty slice when there is none.
func (in *Incidents) FindActiveChannels(ctx context.Context) ([]string, error) {
	const op = "Incidents.FindActiveChannels"
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	chs, err := s.core.drv.ActiveChannels(ctx, s.ns, s.now())
	if err != nil {
		return nil, wrap(op, err)
	}
	if chs == nil {
		chs = []string{}
	}
	return chs, nil
}

// LoadOpenIssuesInChannel returns the open issues of channelID by unique id;
// an empty map when there is none.
func (in *Incidents) LoadOpenIssuesInChannel(ctx context.Context, channelID string) (map[string]json.RawMessage, error) {
	const op = "Incidents.LoadOpenIssuesInChannel"
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := checkKey(op, "channel id", channelID); err != nil {
		return nil, err
	}
	found, err := s.core.drv.OpenIssuesInChannel(ctx, s.ns, channelID, s.now())
	if err != nil {
		return nil, wrap(op, err)
	}
	out := make(map[string]json.RawMessage, len(found))
	for _, r := range found {
		out[r.UniqueID] = json.RawMessage(r.Body)
	}
	return out, nil
}

// SaveMoveMapping creates or replaces the mapping (its original channel, its
// correlation id).
func (in *Incidents) SaveMoveMapping(ctx context.Context, mapping MoveMapping) error {
	const op = "Incidents.SaveMoveMapping"
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if isNil(mapping) {
		return invalid(op, "nil move mapping")
	}
	m := driver.MoveMappingRecord{Channel: mapping.ChannelID(), CorrelationID: mapping.GetCorrelationID(), UniqueID: mapping.UniqueID()}
	if err := checkKey(op, "channel id", m.Channel); err != nil {
		return err
	}
	if err := checkCorrelation(op, m.CorrelationID); err != nil {
		return err
	}
	if err := checkText(op, "unique id", m.UniqueID); err != nil {
		return err
	}
	body, err := mapping.MarshalJSON()
	if err != nil {
		return invalid(op, "move mapping does not marshal: %v", err)
	}
	if err := s.checkJSON(op, "move mapping body", body); err != nil {
		return err
	}
	m.Body = body
	return wrap(op, s.core.drv.SaveMoveMapping(ctx, s.ns, m))
}

func (in *Incidents) mappingArgs(ctx context.Context, op, channelID, correlationID string) error {
	if err := in.s.begin(ctx, op); err != nil {
		return err
	}
	if err := checkKey(op, "channel id", channelID); err != nil {
		return err
	}
	return checkCorrelation(op, correlationID)
}

// FindMoveMapping returns the mapping body, or (nil, nil) when there is none.
func (in *Incidents) FindMoveMapping(ctx context.Context, channelID, correlationID string) (json.RawMessage, error) {
	const op = "Incidents.FindMoveMapping"
	if err := in.mappingArgs(ctx, op, channelID, correlationID); err != nil {
		return nil, err
	}
	b, ok, err := in.s.core.drv.FindMoveMapping(ctx, in.s.ns, channelID, correlationID)
	if err != nil || !ok {
		return nil, wrap(op, err)
	}
	return json.RawMessage(b), nil
}

// DeleteMoveMapping removes the mapping. Absent is not an error.
func (in *Incidents) DeleteMoveMapping(ctx context.Context, channelID, correlationID string) error {
	const op = "Incidents.DeleteMoveMapping"
	if err := in.mappingArgs(ctx, op, channelID, correlationID); err != nil {
		return err
	}
	return wrap(op, in.s.core.drv.DeleteMoveMapping(ctx, in.s.ns, channelID, correlationID))
}

// SaveChannelProcessingState creates or replaces the channel's state.
func (in *Incidents) SaveChannelProcessingState(ctx context.Context, state *ChannelProcessingState) error {
	const op = "Incidents.SaveChannelProcessingState"
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if state == nil {
		return invalid(op, "nil processing state")
	}
	if err := checkKey(op, "channel id", state.ChannelID); err != nil {
		return err
	}
	body, err := json.Marshal(state)
	if err != nil {
		return invalid(op, "processing state does not marshal: %v", err)
	}
	return wrap(op, s.core.drv.SaveProcessingState(ctx, s.ns, state.ChannelID, body))
}

// FindChannelProcessingState returns the channel's state, or (nil, nil) when
// none was saved.
func (in *Incidents) FindChannelProcessingState(ctx context.Context, channelID string) (*ChannelProcessingState, error) {
	const op = "Incidents.FindChannelProcessingState"
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := checkKey(op, "channel id", channelID); err != nil {
		return nil, err
	}
	b, ok, err := s.core.drv.FindProcessingState(ctx, s.ns, channelID)
	if err != nil || !ok {
		return nil, wrap(op, err)
	}
	var st ChannelProcessingState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, &Error{Op: op, Msg: "stored processing state does not decode", Err: ErrUnavailable}
	}
	return &st, nil
}

// DropAllData deletes every alert, issue, move mapping and processing state
// of the namespace. Meant for tests.
func (in *Incidents) DropAllData(ctx context.Context) error {
	const op = "Incidents.DropAllData"
	s := in.s
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	return wrap(op, s.core.drv.DropIncidents(ctx, s.ns))
}
