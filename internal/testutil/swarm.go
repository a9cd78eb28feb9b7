package testutil

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
)

// RequireSwarm returns a client of an Engine that manages a swarm for the
// whole test. An Engine already in a swarm as a manager is used as it is
// and left in it; an Engine in no swarm becomes a one-node swarm
// (`docker swarm init --advertise-addr 127.0.0.1`) that the test leaves
// (`docker swarm leave --force`) when it ends. The test is skipped, saying
// so loudly, where there is no Engine, where the init fails, or where the
// Engine is a swarm worker. Swarm tests of all test binaries run one at a
// time: one binary's leave must not end the swarm another uses.
func RequireSwarm(t testing.TB) *client.Client {
	t.Helper()
	cli := RequireDocker(t)
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "sloproxy-swarm-test.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lock.Close() }) // releases the lock, after the leave below
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := cli.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	switch st := info.Swarm.LocalNodeState; {
	case st == swarm.LocalNodeStateActive && info.Swarm.ControlAvailable:
		return cli
	case st != swarm.LocalNodeStateInactive:
		t.Skipf("SKIPPING: THE DOCKER ENGINE IS IN A SWARM (state %q) BUT NOT A MANAGER; this test needs a swarm manager or an Engine in no swarm", st)
	}
	if _, err := cli.SwarmInit(ctx, swarm.InitRequest{ListenAddr: "127.0.0.1:2377", AdvertiseAddr: "127.0.0.1"}); err != nil {
		t.Skipf("SKIPPING: NO SWARM: `docker swarm init --advertise-addr 127.0.0.1` failed (%v); this test needs a one-node swarm", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cli.SwarmLeave(ctx, true); err != nil {
			t.Errorf("leaving the swarm the test made: %v", err)
		}
	})
	return cli
}

// RemoveServices removes, when the test ends, every swarm service labelled
// key=value.
func RemoveServices(t testing.TB, cli *client.Client, key, value string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, err := cli.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(filters.Arg("label", key+"="+value))})
		if err != nil {
			t.Logf("listing services %s=%s: %v", key, value, err)
			return
		}
		for _, s := range list {
			if err := cli.ServiceRemove(ctx, s.ID); err != nil && !client.IsErrNotFound(err) {
				t.Logf("removing service %s: %v", s.Spec.Name, err)
			}
		}
	})
}
