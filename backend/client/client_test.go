package client_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/client"
	_ "github.com/botstate/botstate/backend/mem"
	"github.com/botstate/botstate/server"
	"github.com/botstate/botstate/statetest"
)

// serve starts a server over url's backend and returns its address.
func serve(t *testing.T, url string, tokens map[string]string) string {
	t.Helper()
	st, err := botstate.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := server.New(server.Config{Store: st, Tokens: tokens, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs.URL
}

func TestConformanceOverMem(t *testing.T) {
	base := serve(t, "mem://", map[string]string{"admin-token": server.Admin})
	statetest.Run(t, statetest.URLOpener(base+"?token=admin-token"))
}

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// liveServer builds cmd/botstate and runs `botstate serve` over url, with
// an admin token, until the test ends; it returns the client URL.
func liveServer(t *testing.T, url string) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "botstate-serve")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "botstate")
		if out, err := exec.Command("go", "build", "-o", binary, "../../cmd/botstate").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("live-admin *\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "serve", "-addr", "127.0.0.1:0", "-url", url, "-tokens", tokens)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("botstate serve did not start: %v", err)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "listening on ")) + "?token=live-admin"
}

// TestConformanceAgainstALiveServer runs the suite against the real
// command, serving mem and a shared backend.
func TestConformanceAgainstALiveServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs botstate serve")
	}
	t.Run("mem", func(t *testing.T) { statetest.Run(t, statetest.URLOpener(liveServer(t, "mem://"))) })
	t.Run("redis", func(t *testing.T) {
		statetest.Run(t, statetest.URLOpener(liveServer(t, statetest.BackendURL(t, "BOTSTATE_REDIS_URL"))))
	})
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binary != "" {
			os.RemoveAll(filepath.Dir(binary))
		}
		os.Exit(code)
	}))
}
