package proxy

import "github.com/sloproxy/sloproxy/autoscale"

var _ autoscale.Source = (*Proxy)(nil)

// Observe implements autoscale.Source: what this proxy's dispatcher of a
// model version counted, its ready (healthy) replicas, and what one
// replica serves within the tightest SLO of the apps linking the model,
// from the version's latency fit (none without admission).
func (p *Proxy) Observe(model, version string) (autoscale.Observation, bool) {
	p.pool.mu.RLock()
	e := p.pool.ds[versionKey{model, version}]
	p.pool.mu.RUnlock()
	if e == nil {
		return autoscale.Observation{}, false
	}
	c := e.d.Counts()
	_, ready := e.d.Replicas()
	o := autoscale.Observation{Arrived: c.Arrived, Shed: c.Shed, Answered: c.Answered, Ready: ready}
	if f := p.pool.fit(model, version); f != nil {
		if tightest, _ := linkedApps(p.opts.Store.Snapshot(), model); tightest > 0 {
			o.Capacity = f.Capacity(tightest, e.batchSize)
		}
	}
	return o, true
}
