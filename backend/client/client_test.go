package client_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

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
