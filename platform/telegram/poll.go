package telegram

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/botstate/botstate"
)

// APIError is a Bot API call that Telegram answered with ok: false (or an
// HTTP status without a Bot API answer). It wraps botstate.ErrUnavailable
// for 429 and 5xx (try again later), botstate.ErrConflict for 409 (another
// getUpdates, or a webhook is set) and botstate.ErrInvalidArgument for 400.
type APIError struct {
	// Method is the Bot API method called.
	Method string
	// Code is the answer's error_code, or its HTTP status.
	Code int
	// Description is the answer's description.
	Description string
	// RetryAfter is parameters.retry_after, for 429.
	RetryAfter time.Duration
}

// Error says which method failed, with Telegram's code and description.
func (e *APIError) Error() string {
	return fmt.Sprintf("telegram: %s: %d %s", e.Method, e.Code, e.Description)
}

// Unwrap returns the botstate sentinel the error means, if any.
func (e *APIError) Unwrap() error {
	switch {
	case e.Code == http.StatusTooManyRequests || e.Code >= 500:
		return botstate.ErrUnavailable
	case e.Code == http.StatusConflict:
		return botstate.ErrConflict
	case e.Code == http.StatusBadRequest:
		return botstate.ErrInvalidArgument
	}
	return nil
}

// maxAnswer bounds a Bot API answer read by Call.
const maxAnswer = 64 << 20

// Call calls a Bot API method with params (encoded as a JSON object; nil
// for none) and decodes the answer's result into result (nil to drop it).
// Poll uses it for getUpdates; a bot without a Telegram library can send
// its messages with it. A transport failure wraps botstate.ErrUnavailable;
// a refusal is an *APIError. Errors never contain the token.
func (b *Bot) Call(ctx context.Context, method string, params, result any) error {
	if method == "" || strings.ContainsAny(method, "/?#% ") {
		return fmt.Errorf("telegram: method %q: %w", method, botstate.ErrInvalidArgument)
	}
	body := []byte("{}")
	if params != nil {
		var err error
		if body, err = json.Marshal(params); err != nil {
			return fmt.Errorf("telegram: %s: encoding the parameters: %v: %w", method, err, botstate.ErrInvalidArgument)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.cfg.APIURL+"/bot"+b.cfg.Token+"/"+method, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("telegram: %s: %v: %w", method, redact(err, b.cfg.Token), botstate.ErrInvalidArgument)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("telegram: %s: %w", method, ctx.Err())
		}
		return fmt.Errorf("telegram: %s: %v: %w", method, redact(err, b.cfg.Token), botstate.ErrUnavailable)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("telegram: %s: reading the answer: %v: %w", method, redact(err, b.cfg.Token), botstate.ErrUnavailable)
	}
	var ans struct {
		OK          bool            `json:"ok"`
		Result      json.RawMessage `json:"result"`
		ErrorCode   int             `json:"error_code"`
		Description string          `json:"description"`
		Parameters  struct {
			RetryAfter int `json:"retry_after"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		if resp.StatusCode != http.StatusOK {
			return &APIError{Method: method, Code: resp.StatusCode, Description: http.StatusText(resp.StatusCode)}
		}
		return fmt.Errorf("telegram: %s: the answer is not JSON: %w", method, botstate.ErrUnavailable)
	}
	if !ans.OK {
		code := ans.ErrorCode
		if code == 0 {
			code = resp.StatusCode
		}
		return &APIError{Method: method, Code: code, Description: ans.Description,
			RetryAfter: time.Duration(ans.Parameters.RetryAfter) * time.Second}
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(ans.Result, result); err != nil {
		return fmt.Errorf("telegram: %s: decoding the result: %v: %w", method, err, botstate.ErrUnavailable)
	}
	return nil
}

// redact removes the token from an error's text (net/http's errors quote
// the URL, which holds it).
func redact(err error, token string) string {
	s := err.Error()
	if token != "" {
		s = strings.ReplaceAll(s, token, "<token>")
		s = strings.ReplaceAll(s, url.PathEscape(token), "<token>")
	}
	return s
}

// Poll receives updates by long polling until ctx ends, and returns nil
// then. Each getUpdates call asks for the updates after the last one
// confirmed (offset = last accepted update_id + 1) and waits up to
// Config.PollTimeout for some; each update is dispatched (Dispatch), and
// the offset moves past an update only once the store accepted it, so an
// update the store failed to accept is asked for again, with those after
// it, after a pause. Telegram forgets the updates before the offset of the
// next call: none is lost between a crash and the next poller.
//
// Failed calls (transport errors, 409 when a webhook is set or another
// poller runs, 429, 5xx) are retried with a backoff from 1 s to 30 s
// (429's retry_after when given). Poll returns an error only when the
// token is refused (401, 404), which no retry can fix.
//
// Every poller of a bot is a valid redelivery path: several processes
// polling at once (Telegram allows one; a test fake may allow more) see the
// same updates, and all but one are duplicates.
func (b *Bot) Poll(ctx context.Context) error {
	var offset int64
	failures := 0
	pause := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		var raws []json.RawMessage
		params := map[string]any{"timeout": int(b.cfg.PollTimeout / time.Second)}
		if offset > 0 {
			params["offset"] = offset
		}
		cctx, cancel := context.WithTimeout(ctx, b.cfg.PollTimeout+30*time.Second)
		err := b.Call(cctx, "getUpdates", params, &raws)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var ae *APIError
			if errors.As(err, &ae) && (ae.Code == http.StatusUnauthorized || ae.Code == http.StatusNotFound) {
				return fmt.Errorf("telegram.Poll: the token was refused: %w", err)
			}
			failures++
			wait := backoff(failures)
			if errors.As(err, &ae) && ae.RetryAfter > 0 {
				wait = ae.RetryAfter
			}
			b.log().Warn("telegram: getUpdates failed; retrying", "bot", b.botID, "in", wait, "err", err)
			if !pause(wait) {
				return nil
			}
			continue
		}
		failures = 0
		next, err := b.accept(ctx, raws, offset)
		offset = next
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			b.log().Error("telegram: an update was not accepted; asking for it again", "bot", b.botID, "offset", offset, "err", err)
			if !pause(backoff(failures)) {
				return nil
			}
		}
	}
	return nil
}

// accept dispatches a batch of updates in order and returns the offset to
// confirm next: past the last update accepted before the first one the
// store failed to accept (whose error it returns). An update without a
// readable update_id cannot be confirmed by itself and is skipped.
func (b *Bot) accept(ctx context.Context, raws []json.RawMessage, offset int64) (int64, error) {
	for _, raw := range raws {
		u, err := ParseUpdate(raw)
		if err != nil {
			var id struct {
				UpdateID *int64 `json:"update_id"`
			}
			if json.Unmarshal(raw, &id) == nil && id.UpdateID != nil && *id.UpdateID >= offset {
				offset = *id.UpdateID + 1 // unusable, and no retry makes it usable
			}
			b.log().Error("telegram: skipping an update that does not parse", "bot", b.botID, "err", err)
			continue
		}
		if _, err := b.Dispatch(ctx, u); err != nil {
			if !errors.Is(err, botstate.ErrInvalidArgument) && !errors.Is(err, botstate.ErrTooLarge) {
				return offset, err
			}
			// The store will never take it (too large, say): asking again
			// would stop every later update behind it.
			b.log().Error("telegram: skipping an update the store refuses", "bot", b.botID, "update", u.ID, "err", err)
		}
		if u.ID >= offset {
			offset = u.ID + 1
		}
	}
	return offset, nil
}

// backoff is 1 s doubling to 30 s, with up to 20% jitter either way.
func backoff(failures int) time.Duration {
	d := min(time.Second<<min(failures-1, 5), 30*time.Second)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
