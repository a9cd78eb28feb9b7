package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sloproxy/sloproxy/config"
	"github.com/sloproxy/sloproxy/internal/testutil"
)

// TestRedisLogsThroughZap: go-redis's own lines (here, the dials it gave
// up on when nothing listens) reach the proxy's zap logger, not standard
// error in go-redis's format.
func TestRedisLogsThroughZap(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	rdb, err := newRedis(config.Redis{Addr: testutil.FreeAddr(t)}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered where nothing listens")
	}
	var found bool
	for _, e := range logs.FilterLoggerName("redis").All() {
		if d, _ := e.ContextMap()["detail"].(string); strings.Contains(d, "failed to dial") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no go-redis line about the failed dials through zap; got %v", logs.All())
	}
}

// TestRedisUserAndTLS: the client that redis: describes reaches a real
// redis-server over TLS (a client certificate required, the server's
// verified against redis.tls.ca_file) as an ACL user, and not without
// the right password.
func TestRedisUserAndTLS(t *testing.T) {
	files := testutil.NewTLSFiles(t)
	tlsAddr := testutil.FreeAddr(t)
	_, tlsPort, _ := net.SplitHostPort(tlsAddr)
	srv := testutil.NewRedisServer(t, "--tls-port", tlsPort, "--tls-cert-file", files.Cert, "--tls-key-file", files.Key,
		"--tls-ca-cert-file", files.CA, "--tls-auth-clients", "yes")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	plain := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer plain.Close()
	if err := plain.Do(ctx, "ACL", "SETUSER", "proxy", "on", ">s3cret", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	cfg := config.Redis{Addr: tlsAddr, Username: "proxy", Password: "s3cret",
		TLS: config.RedisTLS{Enabled: true, CAFile: files.CA, CertFile: files.Cert, KeyFile: files.Key}}
	rdb, err := newRedis(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if who, err := rdb.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || who != "proxy" {
		t.Fatalf("ACL WHOAMI over TLS: %q, %v; want proxy", who, err)
	}
	cfg.Password = "wrong"
	wrong, err := newRedis(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if err := wrong.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("PING with a wrong password: %v; want WRONGPASS", err)
	}
}
