package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// TestEachSubcommandHasItsOwnFlags: -h prints the subcommand's usage and
// succeeds; a flag another subcommand has, or none has, is a usage error.
func TestEachSubcommandHasItsOwnFlags(t *testing.T) {
	for _, cmd := range []string{"serve", "export", "import", "migrate", "inspect", "bench"} {
		out, _, err := botCLI(t, "", cmd, "-h")
		if err != nil || !strings.Contains(out, "usage: botstate "+cmd) || !strings.Contains(out, "-") {
			t.Errorf("%s -h: %v, output %q", cmd, err, out)
		}
	}
	url := fileURL(t, "s.db")
	seed(t, url)
	for name, args := range map[string][]string{
		"import -ns":        {"import", "-url", url, "-ns", "acme"},
		"import -all":       {"import", "-url", url, "-all"},
		"migrate -url":      {"migrate", "-url", url, "-from", url, "-to", "mem://"},
		"migrate -all":      {"migrate", "-from", url, "-to", "mem://", "-all"},
		"export -ns -all":   {"export", "-url", url, "-ns", "acme", "-all"},
		"inspect -ns -all":  {"inspect", "-url", url, "-ns", "acme", "-all"},
		"inspect -o":        {"inspect", "-url", url, "-o", "x"},
		"serve stray arg":   {"serve", "now"},
		"export stray arg":  {"export", "-url", url, "now"},
		"import unknown -x": {"import", "-x"},
	} {
		_, stderr, err := botCLI(t, "", args...)
		if !errors.Is(err, errUsage) {
			t.Errorf("%s: got %v, want a usage error", name, err)
		}
		if !strings.Contains(stderr, "usage: botstate "+args[0]) {
			t.Errorf("%s: the usage is not on stderr: %q", name, stderr)
		}
	}
}

// TestReadingAMissingFileCreatesNothing: export, inspect and migrate from
// a file that does not exist say so, and leave no file behind.
func TestReadingAMissingFileCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nope.db")
	url := "file://" + filepath.ToSlash(path)
	for name, args := range map[string][]string{
		"export":  {"export", "-url", url},
		"inspect": {"inspect", "-url", url},
		"migrate": {"migrate", "-from", url, "-to", "mem://"},
	} {
		_, _, err := botCLI(t, "", args...)
		if !errors.Is(err, botstate.ErrNotFound) || !strings.Contains(fmt.Sprint(err), "does not exist") {
			t.Errorf("%s of a missing file: %v", name, err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s created %s", name, path)
		}
	}
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	if _, _, err := botCLI(t, "", "inspect"); !errors.Is(err, botstate.ErrNotFound) {
		t.Errorf("inspect without -url and no ./botstate.db: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "botstate.db")); !errors.Is(err, os.ErrNotExist) {
		t.Error("inspect created ./botstate.db")
	}
}

// TestBenchMeasuresEveryOperation runs bench briefly on mem and reads both
// of its outputs.
func TestBenchMeasuresEveryOperation(t *testing.T) {
	out, _, err := botCLI(t, "", "bench", "-d", "150ms", "-c", "3", "-json", "mem://")
	if err != nil {
		t.Fatal(err)
	}
	var rs []benchResult
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if len(rs) != len(benchOps) {
		t.Fatalf("%d results, want %d", len(rs), len(benchOps))
	}
	for i, r := range rs {
		if r.Op != benchOps[i] || r.Calls == 0 || r.Errors != 0 || r.OpsPerSec <= 0 ||
			r.P50us < 1 || r.P50us > r.P90us || r.P90us > r.P99us || r.P99us > r.MaxUs {
			t.Errorf("result %+v", r)
		}
	}
	table, _, err := botCLI(t, "", "bench", "-d", "50ms", "-c", "1", "-ops", "claim,append", "-url", "mem://")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "p99") || !strings.Contains(lines[1], "claim") || !strings.Contains(lines[2], "append") {
		t.Errorf("table:\n%s", table)
	}
}

func TestBenchRefusesBadInput(t *testing.T) {
	for name, args := range map[string][]string{
		"no URL":         {"bench"},
		"no workers":     {"bench", "-c", "0", "mem://"},
		"no time":        {"bench", "-d", "0s", "mem://"},
		"unknown op":     {"bench", "-ops", "claim,frob", "mem://"},
		"URL twice":      {"bench", "-url", "mem://", "mem://"},
		"two arguments":  {"bench", "mem://", "mem://"},
		"bad namespace":  {"bench", "-ns", "a b", "mem://"},
		"flag after URL": {"bench", "mem://", "-c", "2"},
	} {
		if _, _, err := botCLI(t, "", args...); !errors.Is(err, errUsage) {
			t.Errorf("%s: got %v, want a usage error", name, err)
		}
	}
	if _, _, err := botCLI(t, "", "bench", "-d", "10ms", "nosuch://x"); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("an unknown scheme: %v", err)
	}
}

// TestProgressReportsAsItGoes: off a terminal, export and import print a
// plain progress line every progressEvery and a summary with the count
// and rate at the end; on a terminal the line carries a bar when the size
// is known.
func TestProgressReportsAsItGoes(t *testing.T) {
	defer func(d time.Duration) { progressEvery = d }(progressEvery)
	progressEvery = time.Millisecond
	url := fileURL(t, "big.db")
	var snap strings.Builder
	snap.WriteString(`{"format":"botstate-snapshot","version":1}` + "\n")
	for i := range 20000 {
		fmt.Fprintf(&snap, `{"kind":"cache_value","ns":"default","key":"k%05d","payload":"dg=="}`+"\n", i)
	}
	_, msg, err := botCLI(t, snap.String(), "import", "-url", url)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "imported 20000 items into "+url) || !strings.Contains(msg, "items/s") {
		t.Errorf("import summary: %q", msg)
	}
	out, msg, err := botCLI(t, "", "export", "-url", url)
	if err != nil || strings.Count(out, "\n") != 20001 {
		t.Fatalf("export: %v, %d lines", err, strings.Count(out, "\n"))
	}
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "exported 20000 items from "+url) {
		t.Errorf("export summary: %q", last)
	}
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "exporting ") || strings.Contains(msg, "\r") {
		t.Errorf("no plain progress line before the summary:\n%s", msg)
	}
	p := &progress{tty: true, verb: "imported", total: 1000, start: time.Now().Add(-time.Second)}
	p.lines.Store(501)
	p.bytes.Store(500)
	if l := p.line(); !strings.HasPrefix(l, "[===============               ] importing 500 items") || !strings.HasSuffix(l, "(50%)") {
		t.Errorf("terminal line %q", l)
	}
	if thousands(1234567) != "1,234,567" || thousands(12) != "12" {
		t.Error("thousands")
	}
}
