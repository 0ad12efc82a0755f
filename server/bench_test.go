package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/server"
	"github.com/botstate/botstate/statetest"
)

// BenchmarkClaim measures a Claim of a new key through the server (mem
// backend, keep-alive, 64 concurrent clients) against a bare net/http
// handler that does nothing with the same request, and against the same
// Claim in-process, in one run:
//
//	go test -run '^$' -bench Claim -benchtime 100000x ./server/
func BenchmarkClaim(b *testing.B) {
	var seq atomic.Int64
	body := func() []byte {
		n := seq.Add(1)
		return []byte(`{"key":"k` + strconv.FormatInt(n, 10) + `","payload":"cA==","token":"t` + strconv.FormatInt(n, 10) +
			`","lease_until":"` + time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano) + `"}`)
	}
	run := func(b *testing.B, url string) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
		defer client.CloseIdleConnections()
		b.SetParallelism(32) // 64 goroutines on 2 cores
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Post(url, "application/json", bytes.NewReader(body()))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	}
	b.Run("bare-net-http", func(b *testing.B) {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, "{}\n")
		}))
		defer hs.Close()
		run(b, hs.URL+"/v1/ns/bench/events/claim")
	})
	b.Run("server", func(b *testing.B) {
		st, err := botstate.Open(context.Background(), "mem://")
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		srv, err := server.New(server.Config{Store: st, Tokens: map[string]string{}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		hs := httptest.NewServer(srv)
		defer hs.Close()
		run(b, hs.URL+"/v1/ns/bench/events/claim")
	})
	b.Run("in-process", func(b *testing.B) {
		st, err := botstate.Open(context.Background(), "mem://")
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		ev := st.Namespace("bench").Events()
		b.SetParallelism(32)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if _, err := ev.Claim(ctx, "k"+strconv.FormatInt(seq.Add(1), 10), []byte("p"), time.Minute); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	})
}

// BenchmarkDashboard renders dashboard pages of a namespace holding 100 k
// conversations, 100 k held locks with a queued entry each and 100 k
// subscriptions (statetest.FillBrowse), on the embedded file (the default
// of botstate serve) and on mem: the namespace page (ten of each list plus
// the event listings, issues and chart), and a page of 50 at the start and
// near the end of each list. Pages that read only what they show cost the
// same at both ends.
//
//	go test -run '^$' -bench Dashboard -benchtime 200x ./server/
func BenchmarkDashboard(b *testing.B) {
	for _, backend := range []string{"file", "mem"} {
		b.Run(backend, func(b *testing.B) {
			raw := "mem://"
			if backend == "file" {
				raw = "file://" + filepath.Join(b.TempDir(), "bench.db") + "?nosync=1"
			}
			st, err := botstate.Open(context.Background(), raw)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			if err := statetest.FillBrowse(context.Background(), st.Namespace("bench"), 100_000); err != nil {
				b.Fatal(err)
			}
			srv, err := server.New(server.Config{Store: st, Tokens: map[string]string{}, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			for _, p := range []string{
				"/ui/ns/bench",
				"/ui/ns/bench/conversations", "/ui/ns/bench/conversations?after=item-00099900",
				"/ui/ns/bench/locks", "/ui/ns/bench/locks?after=item-00099900",
				"/ui/ns/bench/subscriptions", "/ui/ns/bench/subscriptions?after=item-00099900",
			} {
				b.Run(strings.TrimPrefix(p, "/ui/ns/bench"), func(b *testing.B) {
					for b.Loop() {
						w := httptest.NewRecorder()
						srv.ServeHTTP(w, httptest.NewRequest("GET", p, nil))
						if w.Code != 200 || !strings.Contains(w.Body.String(), "item-000") {
							b.Fatalf("%s: %d %.300s", p, w.Code, w.Body.String())
						}
					}
				})
			}
		})
	}
}
