package process

import (
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/sloproxy/sloproxy/containers/runtime"
)

// inherited reports whether a variable of the proxy's environment is passed
// to model processes: what locates programs, libraries and the user, the
// locale and time zone, the Python and Go tool chains' settings, and the
// GPUs to use. Nothing else is: the proxy's environment holds secrets
// (SLOPROXY_ADMIN_TOKEN, cloud credentials) that a model has no use for.
// Options.PassEnv adds names; a version's own env sets any variable.
func inherited(name string) bool {
	switch name {
	case "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
		"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
		"GOROOT", "GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOTOOLCHAIN", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
		"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES":
		return true
	}
	return strings.HasPrefix(name, "LC_")
}

// environ returns the environment of a replica's process: the variables of
// the proxy's that inherited allows or pass names, then env, then the
// contract's variables, which win over both.
func environ(key runtime.VersionKey, addr string, env map[string]string, pass []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if inherited(name) || slices.Contains(pass, name) {
			out = append(out, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return append(out,
		"SLOPROXY_RPC_ADDR="+addr,
		"SLOPROXY_MODEL_NAME="+key.Model,
		"SLOPROXY_MODEL_VERSION="+key.Version,
	)
}
