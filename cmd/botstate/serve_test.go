package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/botstate/botstate"
)

// startServe runs `botstate serve args…` until the test ends and returns
// the URL it listens on.
func startServe(t *testing.T, args ...string) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve"}, args...), strings.NewReader(""), pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("serve did not start: %v (%v)", err, <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(20 * time.Second):
				stopErr = errors.New("serve did not stop")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	return strings.TrimSpace(strings.TrimPrefix(line, "listening on ")), stop
}

func TestServeAnswersAndShutsDownGracefully(t *testing.T) {
	base, stop := startServe(t, "-addr", "127.0.0.1:0", "-url", "mem://", "-shutdown", "10s")
	st, err := botstate.Open(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := st.Namespace("acme").Events().Claim(context.Background(), "e1", []byte("p"), time.Minute)
	if err != nil || c.Status != botstate.Claimed {
		t.Fatalf("claim through serve: %v %v", c.Status, err)
	}
	resp, err := http.Get(base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	// A request in flight when the server is told to stop still finishes:
	// its body arrives slowly, after the stop.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", base+"/v1/ns/acme/cache/set", pr)
	result := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("in-flight request: %v", err)
		}
		result <- resp
	}()
	_, _ = io.WriteString(pw, `{"key":"k",`)
	time.Sleep(100 * time.Millisecond)
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	time.Sleep(200 * time.Millisecond)
	_, _ = io.WriteString(pw, `"value":"dg=="}`)
	pw.Close()
	resp = <-result
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("the request in flight at shutdown: %+v", resp)
	}
	resp.Body.Close() // else its connection's reader outlives the test
	if err := <-stopped; err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
}

func TestServeRefusesToExposeAnOpenServer(t *testing.T) {
	err := run(context.Background(), []string{"serve", "-addr", "0.0.0.0:0", "-url", "mem://"}, nil, io.Discard, io.Discard)
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("no tokens on 0.0.0.0: %v", err)
	}
	err = run(context.Background(), []string{"serve", "-addr", ":0", "-url", "mem://"}, nil, io.Discard, io.Discard)
	if !errors.Is(err, errUsage) {
		t.Fatalf("no tokens on every interface: %v", err)
	}
	for _, args := range [][]string{{"-tls-cert", "x"}, {"-tokens", "/nonexistent"}, {"stray"}, {"-nope"}} {
		if err := run(context.Background(), append([]string{"serve"}, args...), nil, io.Discard, io.Discard); err == nil {
			t.Errorf("serve %v: accepted", args)
		}
	}
	if err := run(context.Background(), []string{"serve", "-h"}, nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("serve -h: %v", err)
	}
}

func TestTokensFromAFileAndTheEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(path, []byte("# the bots\nsecret-a acme   # acme's\n\nsecret-root *\n"), 0o600)
	got, err := readTokens(path, "secret-b=beta, secret-c=gamma")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"secret-a": "acme", "secret-root": "*", "secret-b": "beta", "secret-c": "gamma"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tokens %v, want %v", got, want)
	}
	for _, bad := range []string{"one-field\n", "a b c\n", "dup x\ndup y\n"} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := readTokens(path, ""); err == nil {
			t.Errorf("tokens file %q accepted", bad)
		}
	}
	if _, err := readTokens("", "no-namespace"); err == nil {
		t.Error("BOTSTATE_TOKENS entry without a namespace accepted")
	}

	// With tokens, the server may listen beyond loopback, and checks them.
	os.WriteFile(path, []byte("secret-a acme\n"), 0o600)
	base, _ := startServe(t, "-addr", "0.0.0.0:0", "-url", "mem://", "-tokens", path)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	st, _ := botstate.Open(context.Background(), "http://127.0.0.1:"+port+"?token=secret-a")
	defer st.Close()
	if _, ok, err := st.Namespace("acme").Cache().Get(context.Background(), "k"); err != nil || ok {
		t.Fatalf("acme's token on acme: %v %v", ok, err)
	}
	if _, _, err := st.Namespace("other").Cache().Get(context.Background(), "k"); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Fatalf("acme's token on another namespace: %v", err)
	}
}

func TestServeOverTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	base, _ := startServe(t, "-addr", "127.0.0.1:0", "-url", "mem://", "-tls-cert", certPath, "-tls-key", keyPath)
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("listening on %s", base)
	}
	st, err := botstate.Open(context.Background(), base+"?skip_verify=true")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if ok, err := st.Threads().IsSubscribed(context.Background(), "T1"); err != nil || ok {
		t.Fatalf("over TLS: %v %v", ok, err)
	}
}
