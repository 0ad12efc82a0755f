package botstate_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/file"
)

// TestErrorContract: every error matches a sentinel, names "botstate:"
// once, and no call panics on a nil writer or a zero lock.
func TestErrorContract(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := botstate.Open(ctx, "file://"+filepath.ToSlash(filepath.Join(dir, "s.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev := st.Events()
	var nilCtx context.Context
	c, err := ev.Claim(ctx, "e1", []byte("p"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wrong := c.Token
	wrong.ID += "x"
	err = ev.Complete(ctx, wrong, nil)
	if !errors.Is(err, botstate.ErrNotOwner) {
		t.Fatalf("complete with a wrong token: %v", err)
	}
	if n := strings.Count(err.Error(), "botstate:"); n != 1 {
		t.Errorf("%q names botstate %d times", err, n)
	}
	for name, fn := range map[string]func() error{
		"Export to a nil writer":    func() error { _, err := st.Export(ctx, nil); return err },
		"ExportAll to a nil writer": func() error { _, err := st.ExportAll(ctx, nil); return err },
		"Import from a nil reader":  func() error { _, err := st.Import(ctx, nil); return err },
		"Claim with a nil context": func() error {
			_, err := ev.Claim(nilCtx, "e2", nil, time.Minute)
			return err
		},
		"Export with a nil context": func() error { _, err := st.Export(nilCtx, io.Discard); return err },
		"Acquire with a nil context": func() error {
			_, err := st.Locks().Acquire(nilCtx, "l", "me", nil, botstate.LockPolicy{TTL: time.Minute})
			return err
		},
		"Heartbeat with a nil context": func() error {
			_, hb := st.Locks().Heartbeat(nilCtx, botstate.Lock{}, time.Minute)
			_, err := hb.Stop()
			return err
		},
	} {
		if err := fn(); !errors.Is(err, botstate.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, hb := st.Locks().Heartbeat(ctx, botstate.Lock{}, time.Minute)
	if _, err := hb.Stop(); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("Heartbeat of a zero Lock: %v", err)
	}
	for name, url := range map[string]string{
		"a missing directory": "file://" + filepath.ToSlash(filepath.Join(dir, "nope", "s.db")),
		"a directory":         "file://" + filepath.ToSlash(dir),
	} {
		_, err := botstate.Open(ctx, url)
		if !errors.Is(err, botstate.ErrInvalidArgument) {
			t.Errorf("open of %s: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Error("open created the missing directory")
	}
}
