package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/botstate/botstate/server"
)

const serveUsage = `usage: botstate serve [flags]

Serves the HTTP API (/v1/…, /v1/openapi.json, /healthz, /readyz, /metrics) over
a backend: by default the embedded file ./botstate.db on 127.0.0.1:8080.

Tokens: a file of "TOKEN NAMESPACE" lines (NAMESPACE * for an admin token; # starts
a comment), or BOTSTATE_TOKENS="TOKEN=NAMESPACE,TOKEN=*". Without tokens every
request is allowed, so the server listens only on loopback.

flags:
`

// serveConfig is what the serve flags say.
type serveConfig struct {
	url, addr, tokensFile, cert, key string
	maxBody                          int64
	rate                             float64
	burst                            int
	grace                            time.Duration
}

func serveFlags(fs *flag.FlagSet) *serveConfig {
	c := &serveConfig{}
	fs.StringVar(&c.url, "url", defaultURL, "backend URL")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&c.tokensFile, "tokens", "", "file of bearer tokens and their namespaces")
	fs.StringVar(&c.cert, "tls-cert", "", "TLS certificate file (with -tls-key)")
	fs.StringVar(&c.key, "tls-key", "", "TLS key file (with -tls-cert)")
	fs.Int64Var(&c.maxBody, "max-body", 4<<20, "request body limit, in bytes")
	fs.Float64Var(&c.rate, "rate", 0, "requests per second per token (0: no limit)")
	fs.IntVar(&c.burst, "burst", 0, "burst of the rate limit (default: the rate)")
	fs.DurationVar(&c.grace, "shutdown", 15*time.Second, "how long in-flight requests may finish after SIGTERM")
	return c
}

// readTokens reads the tokens of a file and of BOTSTATE_TOKENS.
func readTokens(path string, env string) (map[string]string, error) {
	tokens := map[string]string{}
	add := func(where, tok, ns string) error {
		if tok == "" || ns == "" {
			return fmt.Errorf("%s: want a token and a namespace", where)
		}
		if _, dup := tokens[tok]; dup {
			return fmt.Errorf("%s: a token given twice", where)
		}
		tokens[tok] = ns
		return nil
	}
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for line := 1; sc.Scan(); line++ {
			text, _, _ := strings.Cut(sc.Text(), "#")
			fields := strings.Fields(text)
			if len(fields) == 0 {
				continue
			}
			if len(fields) != 2 {
				return nil, fmt.Errorf("%s:%d: want \"TOKEN NAMESPACE\"", path, line)
			}
			if err := add(fmt.Sprintf("%s:%d", path, line), fields[0], fields[1]); err != nil {
				return nil, err
			}
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	for i, pair := range strings.FieldsFunc(env, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		tok, ns, _ := strings.Cut(pair, "=")
		if err := add(fmt.Sprintf("BOTSTATE_TOKENS entry %d", i+1), tok, ns); err != nil {
			return nil, err
		}
	}
	return tokens, nil
}

// loopback reports whether addr listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serve runs the server until ctx ends, then shuts it down gracefully. It
// writes "listening on URL" to stdout once it accepts connections.
func serve(ctx context.Context, c *serveConfig, stdout, stderr io.Writer) error {
	tokens, err := readTokens(c.tokensFile, os.Getenv("BOTSTATE_TOKENS"))
	if err != nil {
		return fmt.Errorf("%w: tokens: %v", errUsage, err)
	}
	if len(tokens) == 0 && !loopback(c.addr) {
		return fmt.Errorf("%w: no tokens: refusing to listen on %s, which is not loopback (give -tokens, or listen on 127.0.0.1)", errUsage, c.addr)
	}
	if (c.cert == "") != (c.key == "") {
		return fmt.Errorf("%w: -tls-cert and -tls-key go together", errUsage)
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	st, err := open(ctx, c.url)
	if err != nil {
		return err
	}
	defer st.Close()
	srv, err := server.New(server.Config{Store: st, Tokens: tokens, MaxBody: c.maxBody, Rate: c.rate, Burst: c.burst, Logger: log})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	scheme := "http"
	if c.cert != "" {
		scheme = "https"
	}
	errc := make(chan error, 1)
	go func() {
		if c.cert != "" {
			errc <- hs.ServeTLS(ln, c.cert, c.key)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	fmt.Fprintf(stdout, "listening on %s://%s\n", scheme, ln.Addr())
	scheme0, _, _ := strings.Cut(c.url, ":") // the URL may hold a password: log its scheme only
	log.Info("serving", "addr", ln.Addr().String(), "backend", scheme0, "tokens", len(tokens), "tls", c.cert != "")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.grace)
	defer cancel()
	log.Info("shutting down", "grace", c.grace.String())
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
