package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

func fileURL(t *testing.T, name string) string {
	return "file://" + filepath.ToSlash(filepath.Join(t.TempDir(), name))
}

func botCLI(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

// seed writes a little of everything into two namespaces of the file at url.
func seed(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	st, err := botstate.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	acme := st.Namespace("acme")
	if _, err := acme.Events().Record(ctx, "e1", []byte("p")); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.Conversations().UpdateData(ctx, "c1", map[string]any{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if err := st.Namespace("beta").Cache().Set(ctx, "k", []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
}

func TestExportImportRoundTrip(t *testing.T) {
	src, dst := fileURL(t, "src.db"), fileURL(t, "dst.db")
	seed(t, src)
	snap, msg, err := botCLI(t, "", "export", "-url", src, "-all")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "exported 3 items") {
		t.Fatalf("export said %q", msg)
	}
	if _, _, err := botCLI(t, snap, "import", "-url", dst); err != nil {
		t.Fatal(err)
	}
	again, _, err := botCLI(t, "", "export", "-url", dst, "-all")
	if err != nil {
		t.Fatal(err)
	}
	if again != snap {
		t.Fatalf("re-export differs:\n%s\n---\n%s", snap, again)
	}
	out := filepath.Join(t.TempDir(), "acme.ndjson")
	if _, _, err := botCLI(t, "", "export", "-url", src, "-ns", "acme", "-o", out); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if strings.Contains(string(b), `"ns":"beta"`) || strings.Count(string(b), "\n") != 3 {
		t.Fatalf("namespace export:\n%s", b)
	}
}

func TestMigrateCarriesEveryNamespace(t *testing.T) {
	src, dst := fileURL(t, "src.db"), fileURL(t, "dst.db")
	seed(t, src)
	_, msg, err := botCLI(t, "", "migrate", "-from", src, "-to", dst)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "migrated 3 items") {
		t.Fatalf("migrate said %q", msg)
	}
	out, _, err := botCLI(t, "", "inspect", "-url", dst, "-all")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"namespace acme", "conversation      1", "event             1", "namespace beta", "cache_value       1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("inspect after migrate lacks %q:\n%s", want, out)
		}
	}
}

func TestBadInput(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown command":    {"frobnicate"},
		"migrate without to": {"migrate", "-from", "mem://"},
		"stray argument":     {"inspect", "extra"},
		"unknown flag":       {"export", "-nope"},
	} {
		if _, _, err := botCLI(t, "", args...); !errors.Is(err, errUsage) {
			t.Errorf("%s: got %v, want a usage error", name, err)
		}
	}
	_, _, err := botCLI(t, "not a snapshot\n", "import", "-url", "mem://")
	if !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("import of garbage: %v", err)
	}
	_, _, err = botCLI(t, "", "export", "-url", "nosuch://x")
	if !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("unknown scheme: %v", err)
	}
	out, _, err := botCLI(t, "", "help")
	if err != nil || !strings.Contains(out, "botstate migrate") {
		t.Errorf("help: %v %q", err, out)
	}
}

func TestDefaultURLIsTheEmbeddedFile(t *testing.T) {
	dir := t.TempDir()
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	if _, _, err := botCLI(t, `{"format":"botstate-snapshot","version":1}`+"\n"+`{"kind":"cache_value","ns":"default","key":"k","payload":"dg=="}`+"\n", "import"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "botstate.db")); err != nil {
		t.Fatalf("import without -url did not use ./botstate.db: %v", err)
	}
	out, _, err := botCLI(t, "", "export")
	if err != nil || !strings.Contains(out, `"key":"k"`) {
		t.Fatalf("export without -url: %v %q", err, out)
	}
}
