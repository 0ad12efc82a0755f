package main

import (
	"io"
	"net/http"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/platform/telegram"
)

// direct is a broken webhook for tests only (TELEGRAMBOT_BROKEN=direct):
// the end-to-end test runs it to show that its checks catch a bot that
// skips the dispatcher. It runs the handler at once on every delivery,
// with no dedupe, no per-chat lock, and a read-modify-write of the
// conversation. Never set that variable otherwise.
func direct(bot *telegram.Bot, st *botstate.Store, secret string, h telegram.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, telegram.DefaultMaxBody))
		u, perr := telegram.ParseUpdate(body)
		if r.Header.Get(telegram.SecretHeader) != secret || err != nil || perr != nil {
			http.Error(w, "refused", http.StatusUnauthorized)
			return
		}
		key, err := bot.ConversationKey(u)
		if err != nil {
			return
		}
		conv, err := st.Conversations().Get(r.Context(), key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		s := telegram.NewSession(conv)
		if err := h(r.Context(), u, s); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if _, err := st.Conversations().SetData(r.Context(), key, s.Data()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}
