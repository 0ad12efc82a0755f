package redis_test

import (
	"context"
	"errors"
	"io"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/botstate/botstate"
	redisbackend "github.com/botstate/botstate/backend/redis"
	"github.com/botstate/botstate/statetest"
)

// TestConformance runs the whole suite against one standalone server.
func TestConformance(t *testing.T) {
	statetest.Run(t, statetest.URLOpener(statetest.BackendURL(t, "BOTSTATE_REDIS_URL")))
}

// TestConformanceCluster runs the whole suite against a 3-master Redis
// Cluster: every script must keep its keys in one slot.
func TestConformanceCluster(t *testing.T) {
	statetest.Run(t, statetest.URLOpener(statetest.BackendURL(t, "BOTSTATE_REDIS_CLUSTER_URL")))
}

// TestConformanceScanEvents runs the suite with index-free events
// (events=scan) on a standalone server and on the Cluster, where each
// event's key has a slot of its own.
func TestConformanceScanEvents(t *testing.T) {
	for _, env := range []string{"BOTSTATE_REDIS_URL", "BOTSTATE_REDIS_CLUSTER_URL"} {
		t.Run(env, func(t *testing.T) {
			statetest.Run(t, statetest.URLOpener(withOption(statetest.BackendURL(t, env), "events=scan")))
		})
	}
}

// withOption adds a query option to a backend URL.
func withOption(raw, opt string) string {
	if strings.Contains(raw, "?") {
		return raw + "&" + opt
	}
	return raw + "?" + opt
}

// TestTLSWithACLUserAndDatabase opens a rediss:// URL with a user, a
// password, a database and a key prefix, and checks that the items land
// there and that a wrong password is refused.
func TestTLSWithACLUserAndDatabase(t *testing.T) {
	raw := statetest.BackendURL(t, "BOTSTATE_REDIS_TLS_URL")
	ctx := context.Background()
	st, err := botstate.Open(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ns := st.Namespace("tls-" + strconv.FormatInt(time.Now().UnixNano(), 36))
	c, err := ns.Events().Claim(ctx, "k", []byte("p"), time.Minute)
	if err != nil || c.Status != botstate.Claimed {
		t.Fatalf("claim over TLS: %+v, %v", c, err)
	}
	if err := ns.Events().Complete(ctx, c.Token, []byte("r")); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Conversations().UpdateData(ctx, "conv", map[string]any{"a": 1}); err != nil {
		t.Fatal(err)
	}
	client := st.Driver().(*redisbackend.Driver).Client()
	scan, err := client.Do(ctx, client.B().Scan().Cursor(0).Match("tls:{"+ns.Name()+":*").Count(100000).Build()).AsScanEntry()
	if err != nil || len(scan.Elements) == 0 {
		t.Fatalf("keys under the URL's prefix: %q, %v", scan.Elements, err)
	}
	db, err := client.Do(ctx, client.B().ClientInfo().Build()).ToString()
	if err != nil || !strings.Contains(db, " db=2 ") {
		t.Fatalf("connection is not on database 2: %q, %v", db, err)
	}

	u, _ := url.Parse(raw)
	u.User = url.UserPassword("botstate", "wrong")
	if st2, err := botstate.Open(ctx, u.String()); err == nil {
		st2.Close()
		t.Fatal("a wrong password was accepted")
	}
}

// TestServerRefusalsMatchSentinels: a standalone URL pointing at a Cluster
// node (a MOVED reply) is ErrInvalidArgument, and a key of botstate's that
// something else overwrote with another type (WRONGTYPE) is ErrConflict.
func TestServerRefusalsMatchSentinels(t *testing.T) {
	ctx := context.Background()
	cluster := statetest.BackendURL(t, "BOTSTATE_REDIS_CLUSTER_URL")
	u, err := url.Parse(cluster)
	if err != nil {
		t.Fatal(err)
	}
	node, _, _ := strings.Cut(u.Host, ",")
	st, err := botstate.Open(ctx, "redis://"+node)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var moved error
	for i := range 20 { // some keys hash to this node's slots
		if _, _, err := st.Cache().Get(ctx, "k"+strconv.Itoa(i)); err != nil {
			moved = err
			break
		}
	}
	if !errors.Is(moved, botstate.ErrInvalidArgument) || !strings.Contains(moved.Error(), "redis+cluster://") {
		t.Errorf("a standalone URL on a Cluster node: %v", moved)
	}

	// Under a prefix of its own, so that no other test's export of the
	// shared server meets the keys overwritten below; they go at the end.
	raw := statetest.BackendURL(t, "BOTSTATE_REDIS_URL")
	ru, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := ru.Query()
	q.Set("prefix", "wrongtype"+strconv.FormatInt(time.Now().UnixNano(), 36)+":")
	ru.RawQuery = q.Encode()
	st2, err := botstate.Open(ctx, ru.String())
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	ns := st2.Namespace("wrongtype-" + strconv.FormatInt(time.Now().UnixNano(), 36))
	if _, err := ns.Conversations().UpdateData(ctx, "c", map[string]any{"a": 1}); err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: mustHost(t, raw)})
	t.Cleanup(func() { rdb.Close() })
	keys, err := rdb.Keys(ctx, "*"+ns.Name()+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("the conversation's keys: %v %v", keys, err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), keys...) })
	for _, k := range keys {
		if err := rdb.Set(ctx, k, "not botstate's", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	_, err = ns.Conversations().UpdateData(ctx, "c", map[string]any{"a": 2})
	if !errors.Is(err, botstate.ErrConflict) || strings.Count(err.Error(), "botstate:") != 1 {
		t.Errorf("a conversation key overwritten with a string: %v", err)
	}
}

func mustHost(t *testing.T, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// TestStoreFromTheApplicationsClient: a store on a rueidis client the
// application already holds, standalone and Cluster, keeps its keys under
// the prefix given, and closing the store leaves the client open.
func TestStoreFromTheApplicationsClient(t *testing.T) {
	ctx := context.Background()
	for name, env := range map[string]string{"standalone": "BOTSTATE_REDIS_URL", "cluster": "BOTSTATE_REDIS_CLUSTER_URL"} {
		t.Run(name, func(t *testing.T) {
			u, err := url.Parse(statetest.BackendURL(t, env))
			if err != nil {
				t.Fatal(err)
			}
			c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: strings.Split(u.Host, ","), DisableCache: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			prefix := "app" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
			drv, err := redisbackend.FromClient(ctx, c, prefix)
			if err != nil {
				t.Fatal(err)
			}
			st, err := botstate.OpenDriver(drv)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 20 { // keys in many slots, on every master
				k := "e" + strconv.Itoa(i)
				if cl, err := st.Events().Claim(ctx, k, []byte("p"), time.Minute); err != nil || cl.Status != botstate.Claimed {
					t.Fatalf("claim %s: %v %v", k, cl.Status, err)
				}
				if _, err := st.Locks().Acquire(ctx, k, "me", nil, botstate.LockPolicy{TTL: time.Minute}); err != nil {
					t.Fatal(err)
				}
			}
			if evs, err := st.Events().Pending(ctx, 100); err != nil || len(evs) != 20 {
				t.Fatalf("pending: %d %v", len(evs), err)
			}
			// Export walks every master on a Cluster: all 40 items, from
			// every slot, only if the driver saw a Cluster client.
			if n, err := st.Export(ctx, io.Discard); err != nil || n != 40 {
				t.Fatalf("export: %d items, %v", n, err)
			}
			var keys []string
			for _, node := range c.Nodes() {
				ks, err := node.Do(ctx, node.B().Keys().Pattern(prefix+"*").Build()).AsStrSlice()
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, ks...)
			}
			if len(keys) == 0 {
				t.Fatalf("no key under the prefix %q", prefix)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
				t.Errorf("the client after the store closed: %v", err)
			}
			if _, err := redisbackend.FromClient(ctx, c, "bad{prefix"); !errors.Is(err, botstate.ErrInvalidArgument) {
				t.Errorf("a prefix with a brace: %v", err)
			}
		})
	}
	if _, err := redisbackend.FromClient(ctx, nil, ""); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("nil client: %v", err)
	}
}
