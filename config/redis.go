package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Redis locates the shared state: one server (Addr, or one entry of
// Addrs), a Sentinel group (Addrs are the Sentinels, MasterName names the
// master they watch) or a Cluster (Addrs are some of its nodes, Cluster
// is true).
type Redis struct {
	// Addr is one server's host:port. Empty, with Addrs empty too, means
	// no Redis (the embedded default).
	Addr string `yaml:"addr"`
	// Addrs are several host:port: the Sentinels with MasterName, seed
	// nodes with Cluster. Set Addr or Addrs, not both.
	Addrs []string `yaml:"addrs"`
	// MasterName is the name under which the Sentinels at Addrs watch
	// the master; set, the proxy asks them where the master is and
	// follows their failovers.
	MasterName string `yaml:"master_name"`
	// Cluster says that Addrs are nodes of a Redis Cluster.
	Cluster bool `yaml:"cluster"`
	// Prefix starts every key and channel the proxy uses.
	Prefix string `yaml:"prefix"`
	// Username is the ACL user; empty means the default user.
	Username string `yaml:"username"`
	// Password, if the server requires one.
	Password string `yaml:"password"`
	// SentinelUsername and SentinelPassword authenticate to the
	// Sentinels when they require it; empty means as to the servers
	// (Username and Password are not sent to the Sentinels).
	SentinelUsername string `yaml:"sentinel_username"`
	SentinelPassword string `yaml:"sentinel_password"`
	// DB is the database number; a Cluster has only 0.
	DB int `yaml:"db"`
	// TLS, when enabled, encrypts every connection to Redis (and to the
	// Sentinels).
	TLS RedisTLS `yaml:"tls"`
	// WaitReplicas is how many replicas must hold a change of the state
	// (apps, models, links: the admin API's writes) before it is
	// acknowledged: the write is followed by Redis's WAIT. With a
	// Sentinel group, 1 or more keeps a failover from losing an
	// acknowledged change. 0 means changes are acknowledged once the
	// master has them.
	WaitReplicas int `yaml:"wait_replicas"`
	// WaitTimeout bounds that WAIT; a change that fewer replicas hold by
	// then is reported as failed (it may still be kept). 0 means
	// state.DefaultWaitTimeout.
	WaitTimeout time.Duration `yaml:"wait_timeout"`
}

// RedisTLS configures TLS to Redis.
type RedisTLS struct {
	// Enabled turns TLS on; the server's certificate is verified against
	// the system's roots, or CAFile.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM file of the certificate authorities to trust
	// instead of the system's. Relative paths, here and below, resolve
	// against the proxy's working directory.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are this proxy's client certificate and key,
	// in PEM, for servers that require one (tls-auth-clients yes).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the server's certificate must carry; empty
	// means the host of the address dialled.
	ServerName string `yaml:"server_name"`
}

// Configured reports whether a Redis is configured.
func (r Redis) Configured() bool { return r.Addr != "" || len(r.Addrs) > 0 }

// Addresses returns Addr, or Addrs.
func (r Redis) Addresses() []string {
	if r.Addr != "" {
		return []string{r.Addr}
	}
	return r.Addrs
}

// TLSConfig returns the TLS configuration to dial Redis with; nil when
// TLS is off.
func (r Redis) TLSConfig() (*tls.Config, error) {
	t := r.TLS
	if !t.Enabled {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls.ca_file %q: no PEM certificate in it", t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("redis.tls: cert_file and key_file go together")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.cert_file, key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func (r Redis) validate() error {
	if r.Addr != "" && len(r.Addrs) > 0 {
		return errors.New("redis.addrs: set redis.addr or redis.addrs, not both")
	}
	if r.Addr != "" {
		if err := checkAddr(r.Addr); err != nil {
			return fmt.Errorf("redis.addr %q: %w", r.Addr, err)
		}
	}
	for i, a := range r.Addrs {
		if err := checkAddr(a); err != nil {
			return fmt.Errorf("redis.addrs[%d] %q: %w", i, a, err)
		}
	}
	switch {
	case r.MasterName != "" && r.Cluster:
		return errors.New("redis.master_name: a Sentinel's master name and cluster: true exclude each other")
	case (r.MasterName != "" || r.Cluster) && !r.Configured():
		return errors.New("redis.addrs: a Sentinel group or a Cluster needs the addresses of its Sentinels or nodes")
	case len(r.Addrs) > 1 && r.MasterName == "" && !r.Cluster:
		return fmt.Errorf("redis.addrs: %d addresses need master_name (the Sentinels of a master) or cluster: true", len(r.Addrs))
	case r.Cluster && r.DB != 0:
		return fmt.Errorf("redis.db %d: a Cluster has only database 0", r.DB)
	case r.DB < 0:
		return fmt.Errorf("redis.db %d: must not be negative", r.DB)
	case r.WaitReplicas < 0:
		return fmt.Errorf("redis.wait_replicas %d: must not be negative", r.WaitReplicas)
	case r.WaitTimeout < 0:
		return fmt.Errorf("redis.wait_timeout %v: must not be negative", r.WaitTimeout)
	case !r.TLS.Enabled && (r.TLS.CAFile != "" || r.TLS.CertFile != "" || r.TLS.KeyFile != "" || r.TLS.ServerName != ""):
		return errors.New("redis.tls.enabled: false, but other redis.tls fields are set")
	}
	_, err := r.TLSConfig()
	return err
}

func checkAddr(a string) error {
	if _, _, err := net.SplitHostPort(a); err != nil {
		return fmt.Errorf("must be host:port: %w", err)
	}
	return nil
}
