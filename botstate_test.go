package botstate_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
)

func TestOpenRefusesBadURLsAndOptions(t *testing.T) {
	ctx := context.Background()
	var nilCtx context.Context
	cases := map[string]func() error{
		"no scheme":       func() error { _, err := botstate.Open(ctx, "localhost:6379"); return err },
		"unknown scheme":  func() error { _, err := botstate.Open(ctx, "nosuch://x"); return err },
		"malformed":       func() error { _, err := botstate.Open(ctx, "mem://%zz"); return err },
		"mem with path":   func() error { _, err := botstate.Open(ctx, "mem:///some/path"); return err },
		"nil context":     func() error { _, err := botstate.Open(nilCtx, "mem://"); return err },
		"nil option":      func() error { _, err := botstate.Open(ctx, "mem://", nil); return err },
		"nil clock":       func() error { _, err := botstate.Open(ctx, "mem://", botstate.WithClock(nil)); return err },
		"negative window": func() error { _, err := botstate.Open(ctx, "mem://", botstate.WithEventWindow(-1)); return err },
		"zero window":     func() error { _, err := botstate.Open(ctx, "mem://", botstate.WithEventWindow(0)); return err },
		"negative skew margin": func() error {
			_, err := botstate.Open(ctx, "mem://", botstate.WithClockSkewMargin(-time.Nanosecond))
			return err
		},
		"huge skew margin": func() error {
			_, err := botstate.Open(ctx, "mem://", botstate.WithClockSkewMargin(botstate.MaxClockSkewMargin+1))
			return err
		},
		"absurd TTL": func() error {
			_, err := botstate.Open(ctx, "mem://", botstate.WithConversationTTL(botstate.MaxTTL+1))
			return err
		},
		"negative limit":   func() error { _, err := botstate.Open(ctx, "mem://", botstate.WithEventLimit(-1)); return err },
		"zero value limit": func() error { _, err := botstate.Open(ctx, "mem://", botstate.WithMaxValueSize(0)); return err },
	}
	for name, fn := range cases {
		if err := fn(); !errors.Is(err, botstate.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", name, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := botstate.Open(cctx, "mem://"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: got %v", err)
	}
	st, err := botstate.Open(ctx, "mem://", botstate.WithEventWindow(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
}

func TestErrorsNameTheOperation(t *testing.T) {
	st, _ := botstate.Open(context.Background(), "mem://")
	defer st.Close()
	_, err := st.Events().Claim(context.Background(), "", nil, time.Minute)
	var e *botstate.Error
	if !errors.As(err, &e) || e.Op != "Events.Claim" || e.Msg == "" {
		t.Fatalf("error %v does not name its operation and cause", err)
	}
	if got := err.Error(); got != "botstate: Events.Claim: event key is empty: invalid argument" {
		t.Fatalf("message %q", got)
	}
}

func TestTokensAreUniqueAcrossStores(t *testing.T) {
	ctx := context.Background()
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		st, _ := botstate.Open(ctx, "mem://")
		for j := 0; j < 100; j++ {
			c, err := st.Events().Claim(ctx, string(rune('a'+j%26))+string(rune('0'+j/26)), nil, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if seen[c.Token.ID] {
				t.Fatalf("token %q issued twice", c.Token.ID)
			}
			seen[c.Token.ID] = true
		}
		st.Close()
	}
}

func TestLockNamesPrintAsWords(t *testing.T) {
	for _, c := range []struct {
		got  fmt.Stringer
		want string
	}{
		{botstate.Reject, "reject"}, {botstate.Queue, "queue"}, {botstate.Debounce, "debounce"},
		{botstate.Concurrent, "concurrent"}, {botstate.Strategy(0), "invalid"},
		{botstate.Acquired, "acquired"}, {botstate.Queued, "queued"}, {botstate.Debounced, "debounced"},
		{botstate.Busy, "busy"}, {botstate.AcquireStatus(9), "invalid"},
		{botstate.Failed, "failed"}, {botstate.EventFailed, "failed"},
	} {
		if s := c.got.String(); s != c.want {
			t.Errorf("%#v prints %q, want %q", c.got, s, c.want)
		}
	}
}
