package telegram

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/botstate/botstate"
)

// SecretHeader is the header Telegram puts the webhook's secret token in.
const SecretHeader = "X-Telegram-Bot-Api-Secret-Token"

// ServeHTTP is the webhook: it accepts one update per POST and answers
// once the update is accepted by the store, before its handler runs.
//
//   - 405 for any method but POST;
//   - 401 when Config.SecretToken is set and the request's
//     X-Telegram-Bot-Api-Secret-Token differs (compared in constant time)
//     or is missing; the body is not read;
//   - 413 for a body over Config.MaxBody;
//   - 400 for a body that is not an update (malformed JSON, no update_id);
//   - 200 once the update is accepted: started, queued, a duplicate of one
//     accepted before, or dropped by the route's policy;
//   - 503 (or 500) when the store could not accept it within
//     Config.DispatchTimeout or failed: Telegram delivers it again.
//
// A refused request stores nothing and runs no handler.
func (b *Bot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "only POST", http.StatusMethodNotAllowed)
		return
	}
	if b.cfg.SecretToken != "" {
		got := r.Header.Get(SecretHeader)
		if subtle.ConstantTimeCompare([]byte(got), []byte(b.cfg.SecretToken)) != 1 {
			http.Error(w, "missing or wrong "+SecretHeader, http.StatusUnauthorized)
			return
		}
	}
	if r.ContentLength > b.cfg.MaxBody {
		http.Error(w, "body over "+strconv.FormatInt(b.cfg.MaxBody, 10)+" bytes", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, b.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body over "+strconv.FormatInt(b.cfg.MaxBody, 10)+" bytes", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	u, err := ParseUpdate(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, err := b.Dispatch(r.Context(), u)
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, botstate.ErrTooLarge):
			code = http.StatusRequestEntityTooLarge
		case errors.Is(err, botstate.ErrInvalidArgument):
			code = http.StatusBadRequest
		case errors.Is(err, botstate.ErrUnavailable), errors.Is(err, botstate.ErrClosed),
			errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
			code = http.StatusServiceUnavailable
		}
		b.log().ErrorContext(r.Context(), "telegram: webhook: update not accepted", "bot", b.botID, "update", u.ID, "status", code, "err", err)
		http.Error(w, http.StatusText(code), code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `{"ok":true,"outcome":"`+out.String()+`"}`)
}
