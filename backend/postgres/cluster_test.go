package postgres_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

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
	base  string
	data  string
	port  int
	URL   string
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	statetest.BackendURL(t, "BOTSTATE_POSTGRES_URL")
	pgctl := os.Getenv("BOTSTATE_POSTGRES_PG_CTL")
	if pgctl == "" {
		if statetest.RequireBackends() {
			t.Fatal("BOTSTATE_POSTGRES_PG_CTL is not set: scripts/services/postgres.sh exports it")
		}
		t.Skip("BOTSTATE_POSTGRES_PG_CTL is not set: no PostgreSQL binaries to run a private cluster with")
	}
	c := &cluster{t: t, bin: filepath.Dir(pgctl), runAs: os.Getenv("BOTSTATE_POSTGRES_RUN_AS")}
	base, err := os.MkdirTemp("", "botstate-pgfault-")
	if err != nil {
		t.Fatal(err)
	}
	c.base, c.data = base, filepath.Join(base, "data")
	t.Cleanup(func() { os.RemoveAll(base) })
	if c.runAs != "" {
		u, err := user.Lookup(c.runAs)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(base, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	c.run("initdb", "-D", c.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
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
