package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/config"
	"github.com/sloproxy/sloproxy/jobs"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

// adminToken returns the admin token the config names; without one, the
// token kept in local (generated at its first start), or with Redis one
// generated for this run.
func adminToken(cfg *config.Config, local *dataDir, log *zap.Logger) (string, error) {
	if token := cfg.AdminToken(); token != "" {
		return token, nil
	}
	if local == nil {
		token := randomToken()
		log.Warn("no admin token configured: generated one for this run; set admin.token or the variable admin.token_env names",
			zap.String("variable", cfg.Admin.TokenEnv), zap.String("token", token))
		return token, nil
	}
	token, generated, err := local.adminToken(log)
	if err != nil {
		return "", err
	}
	file := filepath.Join(local.path, tokenFile)
	if generated {
		log.Warn("no admin token configured: generated one and kept it for later starts; set admin.token or the variable admin.token_env names",
			zap.String("variable", cfg.Admin.TokenEnv), zap.String("file", file), zap.String("token", token))
	} else {
		log.Info("no admin token configured: using the one kept in the data directory",
			zap.String("variable", cfg.Admin.TokenEnv), zap.String("file", file))
	}
	return token, nil
}

// The files of a data directory.
const (
	// stateFile is the bbolt file holding the state (bucket "state") and
	// what the selection policies learned (bucket "selection") and the
	// batch jobs' records (bucket "jobs").
	stateFile = "state.db"
	// tokenFile holds the admin token generated when none is configured.
	tokenFile = "admin-token"
)

// dataDirLockWait is how long opening the state file waits for another
// process to release it: long enough for a proxy that is stopping to
// exit, short enough to fail a second proxy on the same directory fast.
const dataDirLockWait = 2 * time.Second

// dataDir is the embedded default's open data directory: what a proxy
// without Redis keeps across restarts.
type dataDir struct {
	path string
	db   *bolt.DB
}

// openDataDir opens cfg's data directory, resolved against dir (the
// configuration file's), creating it (mode 0700: it may hold the admin
// token) if needed. bbolt locks the state file, so a second process on the
// same directory fails here, after dataDirLockWait, with an error saying
// so.
func openDataDir(cfg *config.Config, dir string) (*dataDir, error) {
	path := cfg.DataDir
	if path == "" {
		path = config.DefaultDataDir
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w (without redis.addr the proxy keeps its state there: make it writable, or set data_dir)", err)
	}
	file := filepath.Join(path, stateFile)
	db, err := bolt.Open(file, 0o600, &bolt.Options{Timeout: dataDirLockWait})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("data_dir: %s is locked by another process, likely another sloproxy using %s: give each proxy its own data_dir, or share the state through redis.addr", file, path)
	case err != nil:
		return nil, fmt.Errorf("data_dir: %s: %w", file, err)
	}
	return &dataDir{path: path, db: db}, nil
}

// Close closes the state file, after everything that uses it.
func (d *dataDir) Close() error { return d.db.Close() }

// store returns the state backend in the directory.
func (d *dataDir) store() (state.Backend, error) { return state.NewBolt(d.db) }

// learned returns the selection policies' state in the directory.
func (d *dataDir) learned() (selection.State, error) { return selection.NewBolt(d.db) }

// jobs returns the batch jobs' records in the directory.
func (d *dataDir) jobs() (jobs.Store, error) { return jobs.NewBolt(d.db) }

// adminToken returns the token kept in the directory, generating and
// keeping one (mode 0600) when there is none yet; generated says which.
func (d *dataDir) adminToken(log *zap.Logger) (token string, generated bool, err error) {
	file := filepath.Join(d.path, tokenFile)
	raw, err := os.ReadFile(file)
	switch {
	case err == nil:
		token = strings.TrimSpace(string(raw))
		if token == "" {
			return "", false, fmt.Errorf("data_dir: %s is empty: delete it, and a new token is generated", file)
		}
		if info, err := os.Stat(file); err == nil && info.Mode().Perm()&0o077 != 0 {
			log.Warn("the admin token file is readable by other users: chmod 600 it", zap.String("file", file), zap.Stringer("mode", info.Mode().Perm()))
		}
		return token, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("data_dir: %w", err)
	}
	token = randomToken()
	// Written to a temporary file and renamed, so a crash leaves either
	// no token file or a whole one.
	tmp, err := os.CreateTemp(d.path, tokenFile+".*")
	if err != nil {
		return "", false, fmt.Errorf("data_dir: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	_, err = tmp.WriteString(token + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		return "", false, fmt.Errorf("data_dir: keeping the admin token: %w", err)
	}
	return token, true, nil
}
