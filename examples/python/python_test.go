// Package python runs the Python example against a live server.
package python_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/mem"
	"github.com/botstate/botstate/server"
	"github.com/botstate/botstate/statetest"
)

func TestPythonExampleAgainstALiveServer(t *testing.T) {
	py := statetest.BackendURL(t, "BOTSTATE_PYTHON") // python3, which scripts/test.sh makes sure of
	st, err := botstate.Open(context.Background(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := server.New(server.Config{Store: st, Tokens: map[string]string{"py-token": "python-example"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	for _, token := range []string{"py-token", "wrong-token"} {
		cmd := exec.Command(py, "botstate_example.py")
		cmd.Env = append(os.Environ(), "BOTSTATE_URL="+hs.URL, "BOTSTATE_TOKEN="+token)
		out, err := cmd.CombinedOutput()
		switch {
		case token == "py-token" && (err != nil || !strings.HasSuffix(string(out), "ok\n")):
			t.Fatalf("the example failed: %v\n%s", err, out)
		case token == "wrong-token" && (err == nil || !strings.Contains(string(out), "401 unauthorized")):
			t.Fatalf("the example with a wrong token: %v\n%s", err, out)
		}
		t.Logf("%s: %s", token, out)
	}
	// What the example did is in the store.
	evs, _ := st.Namespace("python-example").Events().Pending(context.Background(), 0)
	if len(evs) != 0 {
		t.Fatalf("the example left events pending: %+v", evs)
	}
}
