package postgres_test

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/botstate/botstate/internal/durabletest"
	"github.com/botstate/botstate/statetest"
)

// cluster is a private PostgreSQL cluster for a test that stops and starts
// its server: restarting the shared test server would disturb the tests of
// other packages running at the same time. It uses the binaries of the
// shared server (scripts/services/postgres.sh exports its pg_ctl and the
// user to run it as).
type cluster struct {
	t     testing.TB
	bin   string // directory of initdb, pg_ctl, postgres
	runAs string
	owner *syscall.Credential // runAs's, nil to run as the caller
	base  string
	data  string
	port  int
	URL   string
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	c := initCluster(t, "botstate-pgfault-")
	c.port = durabletest.FreePort(t)
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = ''\nfsync = off\nfull_page_writes = off\n", c.port)
	f, err := os.OpenFile(filepath.Join(c.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(conf)
	f.Close()
	c.Start()
	t.Cleanup(func() { c.pgctl("-m", "immediate", "stop") })
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
	return c
}

// initCluster initdbs a cluster in a temporary directory named with prefix,
// which t.Cleanup removes, owned by the user scripts/services/postgres.sh
// runs PostgreSQL as, with the binaries that script exports; without them
// it skips the test, or fails it under BOTSTATE_REQUIRE_BACKENDS=1. The
// cluster has no port yet and is not running.
func initCluster(t testing.TB, prefix string) *cluster {
	t.Helper()
	pgctl := os.Getenv("BOTSTATE_POSTGRES_PG_CTL")
	if pgctl == "" {
		if statetest.RequireBackends() {
			t.Fatal("BOTSTATE_POSTGRES_PG_CTL is not set and BOTSTATE_REQUIRE_BACKENDS=1: scripts/services/postgres.sh exports it")
		}
		t.Skip("BOTSTATE_POSTGRES_PG_CTL is not set: no PostgreSQL binaries to run a private cluster with (scripts/services/postgres.sh exports it)")
	}
	c := &cluster{t: t, bin: filepath.Dir(pgctl), runAs: os.Getenv("BOTSTATE_POSTGRES_RUN_AS")}
	base, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	c.base, c.data = base, filepath.Join(base, "data")
	t.Cleanup(func() { os.RemoveAll(base) })
	if c.runAs != "" {
		uid, gid := lookupUser(t, c.runAs)
		if err := os.Chown(base, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
		c.owner = &syscall.Credential{Uid: uid, Gid: gid}
	}
	// --no-sync: nothing here crashes the machine, and what is written
	// after initdb is what the tests are about.
	c.run("initdb", "-D", c.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	return c
}

// lookupUser returns the uid and gid of the user called name.
func lookupUser(t testing.TB, name string) (uid, gid uint32) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	id, err1 := strconv.ParseUint(u.Uid, 10, 32)
	g, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("user %s: uid %q, gid %q", name, u.Uid, u.Gid)
	}
	return uint32(id), uint32(g)
}

// run runs a PostgreSQL binary as the cluster's owner.
func (c *cluster) run(name string, args ...string) {
	c.t.Helper()
	argv := append([]string{filepath.Join(c.bin, name)}, args...)
	if c.runAs != "" {
		argv = append([]string{"runuser", "-u", c.runAs, "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

func (c *cluster) pgctl(args ...string) {
	c.t.Helper()
	c.run("pg_ctl", append([]string{"-D", c.data, "-w", "-t", "60"}, args...)...)
}

// Start starts the server and waits until it accepts connections.
func (c *cluster) Start() {
	c.t.Helper()
	c.pgctl("-l", filepath.Join(c.base, "server.log"), "start")
}

// Stop stops the server; mode is pg_ctl's shutdown mode (smart, fast,
// immediate).
func (c *cluster) Stop(mode string) {
	c.t.Helper()
	c.pgctl("-m", mode, "stop")
}
