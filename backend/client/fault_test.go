package client_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/internal/faultproxy"
	"github.com/botstate/botstate/internal/faultproxy/faulttest"
	"github.com/botstate/botstate/server"
)

// TestProxyFaults puts a fault proxy between the client and a live server
// (over mem) and goes through latency, reset, black hole and pause: every
// call fails with ErrUnavailable by its context's deadline, or, with no
// deadline, by the URL's timeout; the same Store works again once the fault
// is cleared; and once the store is closed no goroutine is left behind, on
// the client's side or (for its connections) on the proxy's and the
// server's.
func TestProxyFaults(t *testing.T) {
	base, err := url.Parse(serve(t, "mem://", map[string]string{"admin-token": server.Admin}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.Start(base.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	// What runs now (the server's and the proxy's accept loops, the mem
	// store's sweeper) is not the client's.
	leaks := goleak.IgnoreCurrent()

	for _, tc := range []struct {
		name string
		url  string
		cfg  faulttest.Config
	}{
		{"deadline", "http://" + p.Addr() + "?token=admin-token", faulttest.Config{}},
		{"timeout", "http://" + p.Addr() + "?token=admin-token&timeout=300ms",
			faulttest.Config{Deadline: 300 * time.Millisecond, OwnTimeout: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := botstate.Open(context.Background(), tc.url)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ev := st.Namespace("proxyfault").Events()
			faulttest.Run(t, tc.cfg, func(ctx context.Context, key string) error {
				_, err := ev.Claim(ctx, key, nil, time.Minute)
				return err
			}, p)
		})
	}
	// A call cut by its context's deadline says so too, as on the other
	// backends.
	t.Run("deadline-kept", func(t *testing.T) {
		st, err := botstate.Open(context.Background(), "http://"+p.Addr()+"?token=admin-token")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		p.Blackhole()
		defer p.Clear()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err = st.Namespace("proxyfault").Events().Claim(ctx, "kept", nil, time.Minute)
		if !errors.Is(err, botstate.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a call past its deadline: %v, want ErrUnavailable and context.DeadlineExceeded", err)
		}
	})
	goleak.VerifyNone(t, leaks)
}
