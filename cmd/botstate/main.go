// Command botstate serves a bot's state over HTTP, and moves and inspects
// it on any backend.
//
//	botstate serve   [-url URL] [-addr HOST:PORT] [-tokens FILE] [-tls-cert F -tls-key F]
//	botstate export  [-url URL] [-ns NS | -all] [-o FILE]
//	botstate import  [-url URL] [-i FILE]
//	botstate migrate -from URL -to URL [-ns NS]
//	botstate inspect [-url URL] [-ns NS | -all]
//	botstate bench   [-c N] [-d DURATION] [-ops LIST] [-json] URL
//
// Without -url it works on the embedded file ./botstate.db, the state a
// single-machine bot keeps.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/botstate/botstate"
	_ "github.com/botstate/botstate/backend/client"
	_ "github.com/botstate/botstate/backend/dynamodb"
	"github.com/botstate/botstate/backend/file"
	_ "github.com/botstate/botstate/backend/mem"
	_ "github.com/botstate/botstate/backend/postgres"
	_ "github.com/botstate/botstate/backend/redis"
)

// defaultURL is the embedded file in the working directory.
var defaultURL = "file:" + file.DefaultPath

const usage = `botstate serves a bot's state over HTTP, and moves and inspects it on any backend.

usage:
  botstate serve   [-url URL] [-addr HOST:PORT] [-tokens FILE]  the HTTP API (botstate serve -h)
  botstate export  [-url URL] [-ns NS | -all] [-o FILE]   write a snapshot (stdout by default)
  botstate import  [-url URL] [-i FILE]                    load a snapshot (stdin by default)
  botstate migrate -from URL -to URL [-ns NS]              copy every namespace (or NS) between backends
  botstate inspect [-url URL] [-ns NS | -all]              count items by kind
  botstate bench   [-c N] [-d DURATION] [-json] URL        throughput and latency per operation

URL defaults to ` + "file:botstate.db" + ` (the embedded file in this directory). Backends:
mem://, file:///path/state.db, redis://, rediss://, redis+cluster://h1:p1,h2:p2,
postgres://, dynamodb://table?region=…
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "botstate:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		fs := newFlags(cmd, serveUsage)
		c := serveFlags(fs.FlagSet)
		if err := parse(fs, args, stdout, stderr); err != nil {
			return err
		}
		if fs.help {
			return nil
		}
		return serve(ctx, c, stdout, stderr)
	case "export":
		fs := newFlags(cmd, "usage: botstate export [-url URL] [-ns NS | -all] [-o FILE]\n\n"+
			"Writes a snapshot of a namespace (or of all of them) as NDJSON.\n\nflags:\n")
		url, ns, all := fs.String("url", defaultURL, "backend URL"), fs.String("ns", botstate.DefaultNamespace, "namespace"), fs.Bool("all", false, "every namespace")
		out := fs.String("o", "-", "output file (- for stdout)")
		if err := parse(fs, args, stdout, stderr); err != nil || fs.help {
			return err
		}
		if err := oneNamespace(fs, stderr); err != nil {
			return err
		}
		if err := mustExist(*url); err != nil {
			return err
		}
		return export(ctx, *url, *ns, *all, *out, stdout, stderr)
	case "import":
		fs := newFlags(cmd, "usage: botstate import [-url URL] [-i FILE]\n\n"+
			"Loads a snapshot: every item goes to the namespace its line names.\n\nflags:\n")
		url := fs.String("url", defaultURL, "backend URL")
		in := fs.String("i", "-", "input file (- for stdin)")
		if err := parse(fs, args, stdout, stderr); err != nil || fs.help {
			return err
		}
		return importSnapshot(ctx, *url, *in, stdin, stderr)
	case "migrate":
		fs := newFlags(cmd, "usage: botstate migrate -from URL -to URL [-ns NS]\n\n"+
			"Copies every namespace (or NS) from one backend to another.\n\nflags:\n")
		from, to := fs.String("from", "", "source backend URL"), fs.String("to", "", "target backend URL")
		ns := fs.String("ns", "", "only this namespace (default: every one)")
		if err := parse(fs, args, stdout, stderr); err != nil || fs.help {
			return err
		}
		if *from == "" || *to == "" {
			return fmt.Errorf("%w: migrate needs -from and -to", errUsage)
		}
		if err := mustExist(*from); err != nil {
			return err
		}
		return migrate(ctx, *from, *to, *ns, *ns == "", stderr)
	case "inspect":
		fs := newFlags(cmd, "usage: botstate inspect [-url URL] [-ns NS | -all]\n\n"+
			"Counts the items of each kind in a namespace (or in all of them).\n\nflags:\n")
		url, ns, all := fs.String("url", defaultURL, "backend URL"), fs.String("ns", botstate.DefaultNamespace, "namespace"), fs.Bool("all", false, "every namespace")
		if err := parse(fs, args, stdout, stderr); err != nil || fs.help {
			return err
		}
		if err := oneNamespace(fs, stderr); err != nil {
			return err
		}
		if err := mustExist(*url); err != nil {
			return err
		}
		return inspect(ctx, *url, *ns, *all, stdout)
	case "bench":
		fs := newFlags(cmd, benchUsage)
		c, err := parseBench(fs, args, stdout, stderr)
		if err != nil || fs.help {
			return err
		}
		return bench(ctx, c, stdout, stderr)
	}
	return fmt.Errorf("%w: unknown command %q (see botstate help)", errUsage, cmd)
}

// flags is one subcommand's flag set and the usage text that leads its
// flag list.
type flags struct {
	*flag.FlagSet
	usage string
	help  bool // -h was given: the usage was printed
}

func newFlags(name, usage string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse reports errors itself
	fs.Usage = func() {}
	return &flags{FlagSet: fs, usage: usage}
}

// printUsage writes the subcommand's usage and its flags to w.
func (fs *flags) printUsage(w io.Writer) {
	fmt.Fprint(w, fs.usage)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parse parses a subcommand's arguments. -h prints its usage on stdout
// and sets fs.help; a bad flag or a stray argument is a usage error, with
// the usage on stderr.
func parse(fs *flags, args []string, stdout, stderr io.Writer) error {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.printUsage(stdout)
		fs.help = true
		return nil
	case err != nil:
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	default:
		return nil
	}
	fs.printUsage(stderr)
	return fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
}

// oneNamespace refuses -ns together with -all.
func oneNamespace(fs *flags, stderr io.Writer) error {
	if isSet(fs.FlagSet, "ns") && isSet(fs.FlagSet, "all") {
		fs.printUsage(stderr)
		return fmt.Errorf("%w: %s: -ns and -all exclude each other", errUsage, fs.Name())
	}
	return nil
}

// mustExist refuses a file URL whose file does not exist: reading it would
// create an empty one.
func mustExist(url string) error {
	path, err := file.PathOf(url)
	if err != nil {
		return nil // not a file URL (or a bad one, which Open reports)
	}
	if _, err := os.Stat(path); errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("%w: %s does not exist", botstate.ErrNotFound, path)
	}
	return nil
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func open(ctx context.Context, url string) (*botstate.Store, error) {
	st, err := botstate.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", url, err)
	}
	return st, nil
}

func exportTo(ctx context.Context, st *botstate.Store, ns string, all bool, w io.Writer) (int, error) {
	if all {
		return st.ExportAll(ctx, w)
	}
	return st.Namespace(ns).Export(ctx, w)
}

func export(ctx context.Context, url, ns string, all bool, out string, stdout, stderr io.Writer) error {
	st, err := open(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	w, closeOut, err := output(out, stdout)
	if err != nil {
		return err
	}
	prog := newProgress(stderr, "exported", 0)
	n, err := exportTo(ctx, st, ns, all, prog.writer(w))
	if cerr := closeOut(); err == nil {
		err = cerr
	}
	prog.finish(n, "from "+url, err)
	return err
}

func output(path string, stdout io.Writer) (io.Writer, func() error, error) {
	if path == "-" {
		return stdout, func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	bw := bufio.NewWriter(f)
	return bw, func() error {
		if err := bw.Flush(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}, nil
}

func importSnapshot(ctx context.Context, url, in string, stdin io.Reader, stderr io.Writer) error {
	r := stdin
	var size int64
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		r = f
	}
	st, err := open(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	// The progress counts the lines read and checked; the writes follow
	// once every line passed.
	prog := newProgress(stderr, "imported", size)
	n, err := st.Import(ctx, prog.reader(r))
	prog.finish(n, "into "+url, err)
	return err
}

// migrate streams a snapshot of the source into the target: every
// namespace unless one is named. Expiry times are absolute, so TTLs carry
// over; items that expire in flight are skipped by the import.
func migrate(ctx context.Context, from, to, ns string, all bool, stderr io.Writer) error {
	src, err := open(ctx, from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := open(ctx, to)
	if err != nil {
		return err
	}
	defer dst.Close()
	pr, pw := io.Pipe()
	exported := make(chan error, 1)
	var n int
	fmt.Fprintf(stderr, "migrating from %s to %s ...\n", from, to)
	prog := newProgress(stderr, "migrated", 0)
	go func() {
		var err error
		n, err = exportTo(ctx, src, ns, all, prog.writer(pw))
		pw.CloseWithError(err)
		exported <- err
	}()
	imported, err := dst.Import(ctx, pr)
	pr.CloseWithError(err)
	xerr := <-exported
	prog.finish(imported, fmt.Sprintf("(%d exported, %d already expired)", n, n-imported), errors.Join(xerr, err))
	if xerr != nil {
		return fmt.Errorf("export from %s: %w", from, xerr)
	}
	if err != nil {
		return fmt.Errorf("import into %s: %w", to, err)
	}
	return nil
}

// inspect counts the items of each kind per namespace.
func inspect(ctx context.Context, url, ns string, all bool, stdout io.Writer) error {
	st, err := open(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	pr, pw := io.Pipe()
	go func() {
		_, err := exportTo(ctx, st, ns, all, pw)
		pw.CloseWithError(err)
	}()
	counts := map[string]map[string]int{}
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		var item struct {
			Kind string `json:"kind"`
			NS   string `json:"ns"`
		}
		if err := json.Unmarshal(sc.Bytes(), &item); err != nil {
			return fmt.Errorf("reading the export: %w", err)
		}
		if counts[item.NS] == nil {
			counts[item.NS] = map[string]int{}
		}
		counts[item.NS][item.Kind]++
	}
	if err := sc.Err(); err != nil {
		return err
	}
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		fmt.Fprintln(stdout, "no items")
	}
	for _, n := range names {
		kinds := make([]string, 0, len(counts[n]))
		for k := range counts[n] {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		fmt.Fprintf(stdout, "namespace %s\n", n)
		for _, k := range kinds {
			fmt.Fprintf(stdout, "  %-17s %d\n", k, counts[n][k])
		}
	}
	return nil
}
