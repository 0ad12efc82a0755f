package client_test

import (
	"context"
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
// is cleared; and once the store, the proxy and the server are closed no
// goroutine is left behind.
func TestProxyFaults(t *testing.T) {
	// Registered first, so it runs after every cleanup below: the server's
	// and the proxy's included.
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	base, err := url.Parse(serve(t, "mem://", map[string]string{"admin-token": server.Admin}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.Start(base.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

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
}
