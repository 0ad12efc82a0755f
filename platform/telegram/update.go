package telegram

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/botstate/botstate"
)

// Update is an incoming update: its identity fields parsed, the raw JSON
// kept. Only what a state layer needs is parsed; a bot reads anything else
// from Raw with the Telegram library it already uses.
type Update struct {
	// ID is the update's update_id, unique per bot.
	ID int64
	// Raw is the whole update as Telegram sent it.
	Raw json.RawMessage
	// Kind names the update's one optional field: "message",
	// "edited_message", "channel_post", "callback_query",
	// "business_message", "inline_query", ... An update of a kind this
	// package does not know keeps the field's name here and no ids.
	Kind string
	// ChatID is the chat the update happened in, 0 when it has none (an
	// inline query, a poll).
	ChatID int64
	// UserID is the user the update comes from, 0 when it names none (a
	// channel post, a poll).
	UserID int64
	// ThreadID is the message_thread_id of a forum topic message (also the
	// message of a callback query), else 0.
	ThreadID int64
	// BusinessConnectionID is set for updates received through a business
	// connection.
	BusinessConnectionID string
	// Text is, for convenience, the message's text (or caption), the
	// callback query's data, or the inline query's query.
	Text string
	// Attempt is the dispatcher's attempt at the update, this one included
	// (0 for an update that did not come from the dispatcher).
	Attempt int
	// Skipped are earlier updates of the scope left unhandled (dropped by a
	// full queue, replaced under Debounce, expired in the queue): see
	// dispatch.Job.Skipped. Oldest first.
	Skipped []*Update
}

// The wire forms of the fields ParseUpdate reads; everything else in an
// update is left to Raw.
type (
	wireUser struct {
		ID int64 `json:"id"`
	}
	wireChat struct {
		ID int64 `json:"id"`
	}
	wireMessage struct {
		Chat                 wireChat  `json:"chat"`
		From                 *wireUser `json:"from"`
		MessageThreadID      int64     `json:"message_thread_id"`
		IsTopicMessage       bool      `json:"is_topic_message"`
		BusinessConnectionID string    `json:"business_connection_id"`
		Text                 string    `json:"text"`
		Caption              string    `json:"caption"`
	}
	wireFrom struct {
		From wireUser `json:"from"`
	}
	wireQuery struct {
		From  wireUser `json:"from"`
		Query string   `json:"query"`
	}
	wireCallback struct {
		From    wireUser     `json:"from"`
		Message *wireMessage `json:"message"`
		Data    string       `json:"data"`
	}
	wireChatFrom struct {
		Chat wireChat `json:"chat"`
		From wireUser `json:"from"`
	}
	wireReaction struct {
		Chat wireChat  `json:"chat"`
		User *wireUser `json:"user"`
	}
	wireBoostSource struct {
		User *wireUser `json:"user"`
	}
	wireBoost struct {
		Chat  wireChat `json:"chat"`
		Boost struct {
			Source wireBoostSource `json:"source"`
		} `json:"boost"`
		Source wireBoostSource `json:"source"` // removed_chat_boost
	}
	wireBusinessConnection struct {
		ID         string   `json:"id"`
		User       wireUser `json:"user"`
		UserChatID int64    `json:"user_chat_id"`
	}
	wireDeletedBusiness struct {
		BusinessConnectionID string   `json:"business_connection_id"`
		Chat                 wireChat `json:"chat"`
	}
	wirePollAnswer struct {
		User      *wireUser `json:"user"`
		VoterChat *wireChat `json:"voter_chat"`
	}

	wireUpdate struct {
		UpdateID                *int64                  `json:"update_id"`
		Message                 *wireMessage            `json:"message"`
		EditedMessage           *wireMessage            `json:"edited_message"`
		ChannelPost             *wireMessage            `json:"channel_post"`
		EditedChannelPost       *wireMessage            `json:"edited_channel_post"`
		BusinessConnection      *wireBusinessConnection `json:"business_connection"`
		BusinessMessage         *wireMessage            `json:"business_message"`
		EditedBusinessMessage   *wireMessage            `json:"edited_business_message"`
		DeletedBusinessMessages *wireDeletedBusiness    `json:"deleted_business_messages"`
		MessageReaction         *wireReaction           `json:"message_reaction"`
		MessageReactionCount    *wireReaction           `json:"message_reaction_count"`
		InlineQuery             *wireQuery              `json:"inline_query"`
		ChosenInlineResult      *wireQuery              `json:"chosen_inline_result"`
		CallbackQuery           *wireCallback           `json:"callback_query"`
		ShippingQuery           *wireFrom               `json:"shipping_query"`
		PreCheckoutQuery        *wireFrom               `json:"pre_checkout_query"`
		PurchasedPaidMedia      *wireFrom               `json:"purchased_paid_media"`
		Poll                    *json.RawMessage        `json:"poll"`
		PollAnswer              *wirePollAnswer         `json:"poll_answer"`
		MyChatMember            *wireChatFrom           `json:"my_chat_member"`
		ChatMember              *wireChatFrom           `json:"chat_member"`
		ChatJoinRequest         *wireChatFrom           `json:"chat_join_request"`
		ChatBoost               *wireBoost              `json:"chat_boost"`
		RemovedChatBoost        *wireBoost              `json:"removed_chat_boost"`
	}
)

func (m *wireMessage) fill(u *Update) {
	u.ChatID = m.Chat.ID
	if m.From != nil {
		u.UserID = m.From.ID
	}
	if m.IsTopicMessage {
		u.ThreadID = m.MessageThreadID
	}
	u.BusinessConnectionID = m.BusinessConnectionID
	u.Text = m.Text
	if u.Text == "" {
		u.Text = m.Caption
	}
}

func (s wireBoostSource) user() int64 {
	if s.User == nil {
		return 0
	}
	return s.User.ID
}

// ParseUpdate parses one update as Telegram sends it (a webhook body, one
// element of getUpdates' result). It refuses, with an error wrapping
// botstate.ErrInvalidArgument, anything that is not a JSON object with a
// non-negative integer update_id, or whose identity fields have the wrong
// JSON type. The update's Raw is a copy of raw.
func ParseUpdate(raw []byte) (*Update, error) {
	var w wireUpdate
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("telegram.ParseUpdate: not an update: %v: %w", err, botstate.ErrInvalidArgument)
	}
	if w.UpdateID == nil {
		return nil, fmt.Errorf("telegram.ParseUpdate: no update_id: %w", botstate.ErrInvalidArgument)
	}
	if *w.UpdateID < 0 {
		return nil, fmt.Errorf("telegram.ParseUpdate: negative update_id %d: %w", *w.UpdateID, botstate.ErrInvalidArgument)
	}
	u := &Update{ID: *w.UpdateID, Raw: bytes.Clone(raw)}
	switch {
	case w.Message != nil:
		u.Kind = "message"
		w.Message.fill(u)
	case w.EditedMessage != nil:
		u.Kind = "edited_message"
		w.EditedMessage.fill(u)
	case w.ChannelPost != nil:
		u.Kind = "channel_post"
		w.ChannelPost.fill(u)
	case w.EditedChannelPost != nil:
		u.Kind = "edited_channel_post"
		w.EditedChannelPost.fill(u)
	case w.BusinessConnection != nil:
		u.Kind = "business_connection"
		u.UserID, u.ChatID = w.BusinessConnection.User.ID, w.BusinessConnection.UserChatID
		u.BusinessConnectionID = w.BusinessConnection.ID
	case w.BusinessMessage != nil:
		u.Kind = "business_message"
		w.BusinessMessage.fill(u)
	case w.EditedBusinessMessage != nil:
		u.Kind = "edited_business_message"
		w.EditedBusinessMessage.fill(u)
	case w.DeletedBusinessMessages != nil:
		u.Kind = "deleted_business_messages"
		u.ChatID = w.DeletedBusinessMessages.Chat.ID
		u.BusinessConnectionID = w.DeletedBusinessMessages.BusinessConnectionID
	case w.MessageReaction != nil:
		u.Kind = "message_reaction"
		u.ChatID = w.MessageReaction.Chat.ID
		if w.MessageReaction.User != nil {
			u.UserID = w.MessageReaction.User.ID
		}
	case w.MessageReactionCount != nil:
		u.Kind = "message_reaction_count"
		u.ChatID = w.MessageReactionCount.Chat.ID
	case w.InlineQuery != nil:
		u.Kind = "inline_query"
		u.UserID, u.Text = w.InlineQuery.From.ID, w.InlineQuery.Query
	case w.ChosenInlineResult != nil:
		u.Kind = "chosen_inline_result"
		u.UserID, u.Text = w.ChosenInlineResult.From.ID, w.ChosenInlineResult.Query
	case w.CallbackQuery != nil:
		u.Kind = "callback_query"
		if m := w.CallbackQuery.Message; m != nil {
			m.fill(u)
		}
		u.UserID, u.Text = w.CallbackQuery.From.ID, w.CallbackQuery.Data
	case w.ShippingQuery != nil:
		u.Kind = "shipping_query"
		u.UserID = w.ShippingQuery.From.ID
	case w.PreCheckoutQuery != nil:
		u.Kind = "pre_checkout_query"
		u.UserID = w.PreCheckoutQuery.From.ID
	case w.PurchasedPaidMedia != nil:
		u.Kind = "purchased_paid_media"
		u.UserID = w.PurchasedPaidMedia.From.ID
	case w.Poll != nil:
		u.Kind = "poll"
	case w.PollAnswer != nil:
		u.Kind = "poll_answer"
		if w.PollAnswer.User != nil {
			u.UserID = w.PollAnswer.User.ID
		}
		if w.PollAnswer.VoterChat != nil {
			u.ChatID = w.PollAnswer.VoterChat.ID
		}
	case w.MyChatMember != nil:
		u.Kind = "my_chat_member"
		u.ChatID, u.UserID = w.MyChatMember.Chat.ID, w.MyChatMember.From.ID
	case w.ChatMember != nil:
		u.Kind = "chat_member"
		u.ChatID, u.UserID = w.ChatMember.Chat.ID, w.ChatMember.From.ID
	case w.ChatJoinRequest != nil:
		u.Kind = "chat_join_request"
		u.ChatID, u.UserID = w.ChatJoinRequest.Chat.ID, w.ChatJoinRequest.From.ID
	case w.ChatBoost != nil:
		u.Kind = "chat_boost"
		u.ChatID, u.UserID = w.ChatBoost.Chat.ID, w.ChatBoost.Boost.Source.user()
	case w.RemovedChatBoost != nil:
		u.Kind = "removed_chat_boost"
		u.ChatID, u.UserID = w.RemovedChatBoost.Chat.ID, w.RemovedChatBoost.Source.user()
	default:
		u.Kind = unknownKind(raw)
	}
	return u, nil
}

// unknownKind names the field of an update of a kind newer than this
// package: the first field other than update_id, in name order so that
// every process names it alike.
func unknownKind(raw []byte) string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return ""
	}
	names := make([]string, 0, len(fields))
	for name, v := range fields {
		if name != "update_id" && !bytes.Equal(v, []byte("null")) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return names[0]
}
