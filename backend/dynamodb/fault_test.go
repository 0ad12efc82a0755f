package dynamodb

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/botstate/botstate/driver"
	"github.com/botstate/botstate/internal/faultproxy"
	"github.com/botstate/botstate/internal/faultproxy/faulttest"
)

// proxiedDriver opens a driver on the test table that talks to DynamoDB
// Local through a proxy.
func proxiedDriver(t *testing.T) (*Driver, *faultproxy.Proxy) {
	base, o := testDriver(t)
	eu, _ := url.Parse(o.Endpoint)
	if eu == nil || eu.Host == "" {
		t.Skip("the test server has no endpoint to put a proxy in front of")
	}
	p, err := faultproxy.Start(eu.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	o.Endpoint = "http://" + p.Addr()
	return driverFor(t, o, base.table), p
}

// TestProxyFaults goes through latency, reset, black hole and pause
// between the driver and DynamoDB Local: every call fails with
// ErrUnavailable by its deadline (the SDK's retries included), the same
// driver works again once the fault is cleared, and closing it leaves no
// goroutine behind.
func TestProxyFaults(t *testing.T) {
	d, p := proxiedDriver(t)
	// The driver has not connected yet: what runs now (the base driver's
	// connections, the proxy's accept loop) is not its own.
	leaks := goleak.IgnoreCurrent()
	ns, now := testNS(t), time.Now()
	faulttest.Run(t, faulttest.Config{}, func(ctx context.Context, key string) error {
		_, err := d.CacheSet(ctx, ns, key, []byte("v"), now, time.Time{}, false)
		return err
	}, p)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// With the proxy still up, so that connections the driver left open
	// would show (the proxy's goroutines for them included).
	goleak.VerifyNone(t, leaks)
}

// TestBrokenConnectionIsUnavailableAndRecovers resets every connection
// (and refuses new ones for a while) under a load of writes with long
// deadlines, as a restarting server or a broken network does.
func TestBrokenConnectionIsUnavailableAndRecovers(t *testing.T) {
	d, p := proxiedDriver(t)
	ns, now := testNS(t), time.Now()

	// Load runs across the reset: every call either succeeds or fails with
	// ErrUnavailable, and none outlives its context.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				start := time.Now()
				_, err := d.CacheSet(ctx, ns, "k", []byte("v"), now, time.Time{}, false)
				cancel()
				if took := time.Since(start); took > 4*time.Second {
					errs <- errors.New("a call outlived its context by a second")
					return
				}
				if err != nil && !errors.Is(err, driver.ErrUnavailable) {
					errs <- err
					return
				}
			}
		}(g)
	}
	time.Sleep(300 * time.Millisecond)
	p.Reset()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, _, err := d.CacheGet(ctx, ns, "k", now)
	cancel()
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Fatalf("while reset: got %v, want ErrUnavailable", err)
	}
	p.Clear()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("under load across the reset: %v", err)
	}
	// The same driver recovers by itself.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.CacheSet(ctx, ns, "k", []byte("after"), now, time.Time{}, false); err != nil {
		t.Fatalf("after the connection came back: %v", err)
	}
	if v, ok, err := d.CacheGet(ctx, ns, "k", now); err != nil || !ok || string(v) != "after" {
		t.Fatalf("read after recovery: %q %v %v", v, ok, err)
	}
}

func TestCloseDropsConnections(t *testing.T) {
	d, p := proxiedDriver(t)
	ns, now := testNS(t), time.Now()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if _, _, err := d.CacheGet(context.Background(), ns, "k", now); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p.Conns() == 0 {
		t.Fatal("no connection went through the proxy")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Conns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open 5s after Close", p.Conns())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
