package selection

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// State stores named maps of arm → number (log-weights, rollback flags),
// shared by every policy that uses the same key. Memory, Bolt and Redis
// implement it.
type State interface {
	// Get returns the map stored at key; empty if none.
	Get(ctx context.Context, key string) (map[string]float64, error)
	// Add atomically adds deltas to the map at key and returns the result.
	// With gap > 0 it then shifts every value so the largest is 0 and
	// clamps each to at least -gap.
	Add(ctx context.Context, key string, deltas map[string]float64, gap float64) (map[string]float64, error)
}

// normalize shifts m so its largest value is 0 and clamps the others at
// -gap.
func normalize(m map[string]float64, gap float64) {
	if gap <= 0 || len(m) == 0 {
		return
	}
	top := math.Inf(-1)
	for _, v := range m {
		top = max(top, v)
	}
	for k, v := range m {
		m[k] = max(v-top, -gap)
	}
}

// Memory is a State in this process, lost when it stops.
type Memory struct {
	mu   sync.Mutex // guards maps
	maps map[string]map[string]float64
}

var _ State = (*Memory)(nil)

// NewMemory returns an empty in-memory state.
func NewMemory() *Memory { return &Memory{maps: map[string]map[string]float64{}} }

// Get implements State.
func (m *Memory) Get(_ context.Context, key string) (map[string]float64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]float64, len(m.maps[key]))
	for k, v := range m.maps[key] {
		out[k] = v
	}
	return out, nil
}

// Add implements State.
func (m *Memory) Add(ctx context.Context, key string, deltas map[string]float64, gap float64) (map[string]float64, error) {
	m.mu.Lock()
	cur := m.maps[key]
	if cur == nil {
		cur = map[string]float64{}
		m.maps[key] = cur
	}
	for k, d := range deltas {
		cur[k] += d
	}
	normalize(cur, gap)
	m.mu.Unlock()
	return m.Get(ctx, key)
}

// addScript adds ARGV[2k+1] to field ARGV[2k] of the hash KEYS[1], then,
// with ARGV[1] > 0, shifts every field so the largest is 0 and clamps
// them at -ARGV[1]. It returns the hash. One script: atomic, so
// concurrent feedback on several proxies is never lost.
var addScript = redis.NewScript(`
for i = 2, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
local all = redis.call('HGETALL', KEYS[1])
local gap = tonumber(ARGV[1])
if gap > 0 and #all > 0 then
  local top = -math.huge
  for i = 2, #all, 2 do
    local v = tonumber(all[i])
    if v > top then top = v end
  end
  for i = 1, #all, 2 do
    local v = tonumber(all[i + 1]) - top
    if v < -gap then v = -gap end
    all[i + 1] = string.format('%.17g', v)
    redis.call('HSET', KEYS[1], all[i], all[i + 1])
  end
end
return all
`)

// Redis is a State in Redis shared by every proxy using the same prefix.
// Each map is a hash at Prefix+key.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

var _ State = (*Redis)(nil)

// NewRedis returns a Redis state on client (which the caller owns) with
// keys under prefix.
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

// Get implements State.
func (r *Redis) Get(ctx context.Context, key string) (map[string]float64, error) {
	raw, err := r.client.HGetAll(ctx, r.prefix+key).Result()
	if err != nil {
		return nil, fmt.Errorf("selection: reading %s: %w", key, err)
	}
	return parseHash(raw)
}

// Add implements State.
func (r *Redis) Add(ctx context.Context, key string, deltas map[string]float64, gap float64) (map[string]float64, error) {
	args := make([]any, 0, 1+2*len(deltas))
	args = append(args, strconv.FormatFloat(gap, 'g', -1, 64))
	for k, d := range deltas {
		args = append(args, k, strconv.FormatFloat(d, 'g', -1, 64))
	}
	res, err := addScript.Run(ctx, r.client, []string{r.prefix + key}, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("selection: updating %s: %w", key, err)
	}
	raw := make(map[string]string, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		raw[res[i]] = res[i+1]
	}
	return parseHash(raw)
}

func parseHash(raw map[string]string) (map[string]float64, error) {
	out := make(map[string]float64, len(raw))
	for k, s := range raw {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("selection: field %q holds %q, not a number", k, s)
		}
		out[k] = v
	}
	return out, nil
}
