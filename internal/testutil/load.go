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
// Each result comes on the channel, closed once the last is in; a query
// gives up after 10 s.
func LoadNewInputs(query, app string, rate int, d time.Duration) <-chan *vegeta.Result {
	var seq atomic.Int64
	targeter := func(tgt *vegeta.Target) error {
		tgt.Method, tgt.URL = http.MethodPost, "http://"+query+"/apps/"+app+"/predict"
		tgt.Header = http.Header{"Content-Type": []string{"application/json"}}
		tgt.Body = fmt.Appendf(nil, `{"input": "load %d"}`, seq.Add(1))
		return nil
	}
	atk := vegeta.NewAttacker(vegeta.Timeout(10*time.Second), vegeta.KeepAlive(true), vegeta.MaxBody(4<<10))
	return atk.Attack(targeter, vegeta.Rate{Freq: rate, Per: time.Second}, d, app)
}
