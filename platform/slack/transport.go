package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/botstate/botstate"
)

// AcceptWithin bounds how long accepting one delivery may take: Slack wants
// an answer (an HTTP response, a Socket Mode acknowledgement) within three
// seconds, and a delivery not accepted in time is better left to Slack's
// retry than acknowledged and lost.
const AcceptWithin = 2500 * time.Millisecond

// ServeHTTP serves the Events API: it verifies the request's signature (and
// that its timestamp is within five minutes), answers url_verification,
// and accepts an event_callback, answering 200 as soon as the event is
// accepted (claimed and queued); the handler runs after. A request that is
// not Slack's gets 401, a body over Config.MaxBody 413, a malformed or
// unknown payload 400, and so does an event whose ids or payload the store
// refuses, since a retry would be refused alike (ErrInvalidArgument, an id
// holding NUL say: 400; ErrTooLarge, an id over 1 KiB or a payload over the
// store's value limit: 413); nothing is stored for any of them. When the
// event could not be accepted otherwise (the store failed) the answer is
// 503, so that Slack delivers it again.
func (b *Bot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "slack: only POST", http.StatusMethodNotAllowed)
		return
	}
	if b.cfg.SigningSecret == "" {
		http.Error(w, "slack: no signing secret configured", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, b.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("slack: body over %d bytes", b.cfg.MaxBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "slack: reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	sv, err := slackapi.NewSecretsVerifier(r.Header, b.cfg.SigningSecret)
	if err == nil {
		_, _ = sv.Write(body)
		err = sv.Ensure()
	}
	if err != nil {
		b.log.Warn("slack: refused an Events API request", "err", err)
		http.Error(w, "slack: signature refused: "+err.Error(), http.StatusUnauthorized)
		return
	}
	var cb callback
	if err := json.Unmarshal(body, &cb); err != nil {
		http.Error(w, "slack: malformed payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	switch cb.Type {
	case "url_verification":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"challenge": cb.Challenge})
		return
	case "app_rate_limited":
		b.log.Warn("slack: Slack is rate-limiting this app's events")
		return
	case "event_callback":
	default:
		http.Error(w, fmt.Sprintf("slack: unknown payload type %q", cb.Type), http.StatusBadRequest)
		return
	}
	e, err := parse(body, "events_api", retryNum(r.Header.Get("X-Slack-Retry-Num")), r.Header.Get("X-Slack-Retry-Reason"))
	if err != nil {
		http.Error(w, "slack: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), AcceptWithin)
	defer cancel()
	if _, _, err := b.accept(ctx, e); err != nil {
		if code := refusedStatus(err); code != 0 {
			b.log.Warn("slack: refused an event the store cannot take", "event_id", e.EventID, "err", err)
			http.Error(w, "slack: "+err.Error(), code)
			return
		}
		b.log.Error("slack: could not accept an event; Slack will deliver it again", "event_id", e.EventID, "err", err)
		http.Error(w, "slack: not accepted, deliver again", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// RunSocketMode runs client (a slack-go Socket Mode client) and accepts the
// events it receives until ctx ends or Slack refuses the app token; a
// connection that fails is opened again. Each events_api
// envelope is acknowledged as soon as its event is accepted, within
// AcceptWithin; one that cannot be accepted is not acknowledged, and Slack
// delivers it again. Envelopes of other kinds (interactive, slash commands)
// are acknowledged and not handled. Envelopes whose event slack-go cannot
// type are read all the same.
func (b *Bot) RunSocketMode(ctx context.Context, client *socketmode.Client) error {
	if client == nil {
		return errors.New("slack: nil Socket Mode client")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		// slack-go reconnects by itself when Slack asks it to; when a
		// reconnection fails it returns, and is started again after a pause.
		for pause := time.Second; ; pause = min(2*pause, 30*time.Second) {
			err := client.RunContext(ctx)
			if ctx.Err() != nil {
				errc <- ctx.Err()
				return
			}
			b.log.Warn("slack: Socket Mode connection failed; connecting again", "err", err, "in", pause)
			select {
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			case <-time.After(pause):
			}
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			<-errc
			return ctx.Err()
		case err := <-errc:
			return err
		case evt := <-client.Events:
			switch evt.Type {
			case socketmode.EventTypeEventsAPI:
				if evt.Request != nil {
					req := *evt.Request
					wg.Go(func() { b.envelope(ctx, client, req) })
				}
			case socketmode.EventTypeErrorBadMessage:
				if bad, ok := evt.Data.(*socketmode.ErrorBadMessage); ok {
					if req, ok := badEnvelope(bad.Message); ok {
						wg.Go(func() { b.envelope(ctx, client, req) })
					}
				}
			case socketmode.EventTypeInteractive, socketmode.EventTypeSlashCommand:
				if evt.Request != nil {
					_ = client.AckCtx(ctx, evt.Request.EnvelopeID, nil)
				}
			case socketmode.EventTypeInvalidAuth:
				cancel()
				<-errc
				return errors.New("slack: Socket Mode refused the app token (invalid_auth)")
			}
		}
	}
}

// badEnvelope reads a message slack-go could not type (its event is one
// slackevents does not know): an events_api envelope with an id, or false.
func badEnvelope(msg json.RawMessage) (socketmode.Request, bool) {
	var req socketmode.Request
	if json.Unmarshal(msg, &req) != nil || req.Type != socketmode.RequestTypeEventsAPI || req.EnvelopeID == "" {
		return socketmode.Request{}, false
	}
	return req, true
}

// envelope accepts one events_api envelope and acknowledges it.
func (b *Bot) envelope(ctx context.Context, client *socketmode.Client, req socketmode.Request) {
	if !b.acceptEnvelope(ctx, req) {
		return
	}
	if err := client.AckCtx(ctx, req.EnvelopeID, nil); err != nil {
		b.log.Error("slack: acknowledging an envelope", "envelope_id", req.EnvelopeID, "err", err)
	}
}

// acceptEnvelope accepts the event of an events_api envelope and reports
// whether to acknowledge the envelope: always, but when the store could not
// accept the event, so that Slack delivers it again.
func (b *Bot) acceptEnvelope(ctx context.Context, req socketmode.Request) bool {
	e, err := parse(req.Payload, "socket_mode", req.RetryAttempt, req.RetryReason)
	if err != nil {
		// It will not parse any better next time: acknowledge and drop it.
		b.log.Warn("slack: dropped a malformed Socket Mode envelope", "envelope_id", req.EnvelopeID, "err", err)
		return true
	}
	actx, cancel := context.WithTimeout(ctx, AcceptWithin)
	defer cancel()
	if _, _, err := b.accept(actx, e); err != nil {
		if refusedStatus(err) != 0 {
			b.log.Warn("slack: dropped a Socket Mode event the store cannot take", "envelope_id", req.EnvelopeID, "event_id", e.EventID, "err", err)
			return true
		}
		b.log.Error("slack: could not accept an event; Slack will deliver it again", "event_id", e.EventID, "err", err)
		return false
	}
	return true
}

// refusedStatus is the HTTP status of an event the store refused for what
// it holds (ErrInvalidArgument, ErrTooLarge), which no redelivery changes;
// 0 for any other failure.
func refusedStatus(err error) int {
	switch {
	case errors.Is(err, botstate.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, botstate.ErrInvalidArgument):
		return http.StatusBadRequest
	}
	return 0
}
