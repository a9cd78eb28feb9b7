package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// adminWrite is one admin change the failover test made: when it was
// sent and answered, and whether it was acknowledged.
type adminWrite struct {
	app        string
	sent, done time.Time
	ok         bool
}

// TestSentinelFailoverUnderLoad runs the real proxy on a Sentinel group
// (a master, two replicas, three Sentinels with down-after-milliseconds
// 500) with its state and cache in Redis and redis.wait_replicas 1. It
// sends 300 queries a second, each with a new input (so every one looks
// the cache up in Redis and fills it), and makes admin changes (one app
// created each 25 ms on each of four writers) throughout, and kills the
// master with SIGKILL in the middle. Every query gets its model's answer;
// every change acknowledged before the kill is in the state on the new
// master; admin writes resume within 2 s of the Sentinels' +switch-master,
// the bound (the time from the switch to the first acknowledged
// write is the client's reaction, logged with the failover's own time).
func TestSentinelFailoverUnderLoad(t *testing.T) {
	const (
		rate      = 300
		duration  = 9 * time.Second
		killAt    = 3 * time.Second
		downAfter = 500 * time.Millisecond
		writers   = 4
		resumeMax = 2 * time.Second
	)
	g := testutil.StartRedisSentinelGroup(t, 2, downAfter)
	noop := testutil.BuildGo(t, "./examples/noop")
	admin := testutil.FreeAddr(t)
	p := testutil.StartProxy(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s, token: t}
redis: {addrs: [%s], master_name: %s, prefix: "ha:", wait_replicas: 1}
runtimes: {process: {enabled: true, port_base: %d}}
cache: {redis_timeout: 20ms}
apps:
  - {name: echo, input_type: string, slo: 1s, default_output: '"late"', models: [noop]}
models:
  - {name: noop, version: "1", input_type: string, command: [%q, --input-type, string]}
`, testutil.FreeAddr(t), admin, strings.Join(g.SentinelAddrs(), ", "), g.MasterName, testutil.FreePort(t), noop))
	waitServed(t, p.Query, "echo", `{"input": "warm"}`, time.Minute)
	oldMaster := g.Master(t)

	// The Sentinels announce the new master on +switch-master.
	sc := redis.NewSentinelClient(&redis.Options{Addr: g.Sentinels[0].Addr})
	defer sc.Close()
	sub := sc.Subscribe(context.Background(), "+switch-master")
	defer sub.Close()
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	switched := make(chan time.Time, 1)
	go func() {
		if _, err := sub.ReceiveMessage(context.Background()); err == nil {
			switched <- time.Now()
		}
	}()

	// Admin changes, on their own goroutines until the load ends.
	var mu sync.Mutex // guards writes
	var writes []adminWrite
	stop := make(chan struct{})
	var writing sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range writers {
		writing.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(25 * time.Millisecond):
				}
				app := fmt.Sprintf("ha-%d-%d", w, n)
				req, _ := http.NewRequest(http.MethodPut, "http://"+admin+"/api/v1/apps/"+app,
					strings.NewReader(`{"name": "`+app+`", "input_type": "string", "slo_ms": 100, "default_output": "0"}`))
				req.Header.Set("Authorization", "Bearer t")
				sent := time.Now()
				resp, err := client.Do(req)
				ok := err == nil && resp.StatusCode/100 == 2
				if err == nil {
					resp.Body.Close()
				}
				mu.Lock()
				writes = append(writes, adminWrite{app: app, sent: sent, done: time.Now(), ok: ok})
				mu.Unlock()
			}
		})
	}

	results := testutil.LoadNewInputs(p.Query, "echo", rate, duration)
	killed := make(chan time.Time, 1)
	go func() {
		time.Sleep(killAt)
		k := time.Now()
		oldMaster.Stop()
		killed <- k
	}()

	var sent, defaults int
	codes := map[uint16]int{}
	reasons := map[string]int{}
	for r := range results {
		sent++
		codes[r.Code]++
		var a answer
		switch {
		case r.Code != http.StatusOK:
			reasons[fmt.Sprintf("%d %s %.100s", r.Code, r.Error, r.Body)]++
		case json.Unmarshal(r.Body, &a) != nil:
			reasons[fmt.Sprintf("not an answer: %.100s", r.Body)]++
		case a.Default:
			defaults++
			reasons["default: "+a.Explanation]++
		}
	}
	close(stop)
	writing.Wait()
	kill := <-killed
	var sw time.Time
	select {
	case sw = <-switched:
	case <-time.After(10 * time.Second):
		t.Fatal("no +switch-master from the Sentinels within 10 s of the load's end")
	}

	// Every change acknowledged before the kill is in the state as the
	// new master holds it.
	newMaster := g.Master(t)
	if newMaster == oldMaster {
		t.Fatalf("the Sentinels still name the killed master %s", oldMaster.Addr)
	}
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: g.MasterName, SentinelAddrs: g.SentinelAddrs()})
	defer rdb.Close()
	data, err := state.NewRedis(rdb, state.RedisOptions{Prefix: "ha:"}).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var before, after, failedWrites int
	var lost []string
	resumed := time.Duration(-1)
	for _, w := range writes {
		switch {
		case !w.ok:
			failedWrites++
		case w.done.Before(kill):
			before++
			if _, ok := data.Apps[w.app]; !ok {
				lost = append(lost, w.app)
			}
		case w.sent.After(kill):
			after++
			if d := w.done.Sub(kill); resumed < 0 || d < resumed {
				resumed = d
			}
		}
	}
	slices.Sort(lost)
	t.Logf("%d queries: %v by status, %d default outputs", sent, codes, defaults)
	t.Logf("master %s killed; +switch-master to %s %v later (down-after %v); first admin write sent after the kill acknowledged %v after it",
		oldMaster.Addr, newMaster.Addr, sw.Sub(kill).Round(time.Millisecond), downAfter, resumed.Round(time.Millisecond))
	t.Logf("admin writes: %d acknowledged before the kill, %d sent after it acknowledged, %d failed (503 while no master answered)",
		before, after, failedWrites)
	if len(reasons) > 0 {
		t.Logf("answers other than the model's: %v", reasons)
	}
	if want := int(rate * duration / time.Second); sent != want {
		t.Errorf("%d queries sent, want %d", sent, want)
	}
	if codes[http.StatusOK] != sent || defaults > 0 {
		t.Errorf("%d of %d queries answered 200, %d with the default output: %v", codes[http.StatusOK], sent, defaults, reasons)
	}
	if before == 0 || after == 0 {
		t.Errorf("%d admin changes acknowledged before the kill, %d after: the test needs both", before, after)
	}
	if len(lost) > 0 {
		t.Errorf("%d admin changes acknowledged before the kill are not in the state after the failover: %v", len(lost), lost)
	}
	if resumed < 0 || resumed > sw.Sub(kill)+resumeMax {
		t.Errorf("admin writes resumed %v after the kill, want within the failover's %v plus %v", resumed, sw.Sub(kill), resumeMax)
	}
}

// TestFeedbackThroughAnyProxyOnCluster runs two real proxies on a
// three-master Redis Cluster (redis.cluster: true) with an exp3 app of two
// models: feedback by query_id sent to the proxy that did not answer the
// query is accepted and scores it, once across both, and both proxies
// report what the policy learned from it.
func TestFeedbackThroughAnyProxyOnCluster(t *testing.T) {
	cluster := testutil.StartRedisCluster(t, 3)
	noop := testutil.BuildGo(t, "./examples/noop")
	// A runs the models' processes; B, as the operations guide says of
	// every proxy but one, does not: it dials A's replicas.
	start := func(runsModels bool) *testutil.Proxy {
		return testutil.StartProxy(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s, token: t}
redis: {addrs: [%s], cluster: true, prefix: "fb:"}
runtimes: {process: {enabled: %t, port_base: %d}}
apps:
  - {name: echo, input_type: string, slo: 2s, default_output: '"late"', policy: exp3, selection: {seed: 1}, models: [m1, m2]}
models:
  - {name: m1, version: "1", input_type: string, command: [%[6]q, --input-type, string]}
  - {name: m2, version: "1", input_type: string, command: [%[6]q, --input-type, string]}
`, testutil.FreeAddr(t), testutil.FreeAddr(t), strings.Join(cluster.Addrs(), ", "), runsModels, testutil.FreePort(t), noop))
	}
	// B's ports are chosen once A's models listen, so that none of them
	// is one a model of A is about to take.
	a := start(true)
	for _, m := range []string{"m1", "m2"} {
		testutil.Eventually(t, time.Minute, "A's model "+m+" ready", func() bool {
			resp, err := http.Get("http://" + a.Query + "/v2/models/" + m + "/ready")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	b := start(false)
	shares := func(p *testutil.Proxy) map[string]float64 {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.Admin+"/api/v1/apps/echo/selection", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct {
			Shares map[string]float64 `json:"shares"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("selection status: %d %v", resp.StatusCode, err)
		}
		return st.Shares
	}
	feedback := func(p *testutil.Proxy, body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post("http://"+p.Query+"/apps/echo/feedback", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	for _, p := range []*testutil.Proxy{a, b} {
		waitServed(t, p.Query, "echo", `{"input": "warm"}`, time.Minute)
	}
	before := shares(b)

	status, ans := predict(t, a.Query, "echo", `{"input": "7"}`)
	if status != http.StatusOK || ans.Default || ans.QueryID == "" {
		t.Fatalf("predict through A: %d %+v", status, ans)
	}
	body := `{"query_id": "` + ans.QueryID + `", "label": "7"}`
	var m map[string]any
	// A writes its answered queries to Redis in the background: B may get
	// the feedback first (404) for a few milliseconds.
	testutil.Eventually(t, 5*time.Second, "B accepting the feedback of A's query", func() bool {
		status, m = feedback(b, body)
		return status == http.StatusOK
	})
	rewards, _ := m["rewards"].(map[string]any)
	if m["query_id"] != ans.QueryID || len(rewards) != 1 {
		t.Fatalf("feedback through B: %v; want one model of query %s rewarded", m, ans.QueryID)
	}
	if status, m := feedback(a, body); status != http.StatusNotFound {
		t.Errorf("the same feedback through A: %d %v; want 404, scored once", status, m)
	}
	after := shares(b)
	if reflect.DeepEqual(after, before) {
		t.Errorf("B's policy learned nothing from the feedback: shares %v before and after", before)
	}
	testutil.Eventually(t, 5*time.Second, "A reporting what B's feedback taught", func() bool { return reflect.DeepEqual(shares(a), after) })
	t.Logf("shares before %v, after the feedback through B %v", before, after)
}
