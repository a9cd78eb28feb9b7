package testutil

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// LoadNewInputs sends rate queries a second for d, at a constant rate, to
// app on the proxy whose query listener is at query, each with a string
// input of its own ("load 1", "load 2", …) so that none is a cache hit.
// It sends exactly rate·d queries, however late a loaded machine sends the
// last ones. Each result comes on the channel, closed once the last is in;
// a query gives up after 10 s.
func LoadNewInputs(query, app string, rate int, d time.Duration) <-chan *vegeta.Result {
	total := int64(rate) * int64(d) / int64(time.Second)
	var seq atomic.Int64
	targeter := func(tgt *vegeta.Target) error {
		n := seq.Add(1)
		if n > total {
			return vegeta.ErrNoTargets
		}
		tgt.Method, tgt.URL = http.MethodPost, "http://"+query+"/apps/"+app+"/predict"
		tgt.Header = http.Header{"Content-Type": []string{"application/json"}}
		tgt.Body = fmt.Appendf(nil, `{"input": "load %d"}`, n)
		return nil
	}
	atk := vegeta.NewAttacker(vegeta.Timeout(10*time.Second), vegeta.KeepAlive(true), vegeta.MaxBody(4<<10))
	// No duration: the targeter ends the attack after its last query,
	// and vegeta reports that end as a result of its own, left out here.
	// The forwarding ends when the attack's channel closes.
	results := atk.Attack(targeter, vegeta.Rate{Freq: rate, Per: time.Second}, 0, app)
	out := make(chan *vegeta.Result)
	go func() {
		defer close(out)
		for r := range results {
			if r.Error != vegeta.ErrNoTargets.Error() {
				out <- r
			}
		}
	}()
	return out
}
