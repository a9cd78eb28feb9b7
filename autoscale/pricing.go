package autoscale

import "github.com/sloproxy/sloproxy/state"

// Pricing is the price of a replica-hour, in whatever currency the
// operator counts in: by runtime kind, overridden by model name.
type Pricing struct {
	// Runtime maps a runtime kind to its replicas' price per hour;
	// a kind it lacks costs 0.
	Runtime map[state.RuntimeKind]float64
	// Model maps a model name to its replicas' price per hour, whatever
	// their runtime; it takes the place of the runtime's.
	Model map[string]float64
}

// Price is the price per hour of one replica of mv.
func (p Pricing) Price(mv state.ModelVersion) float64 {
	if price, ok := p.Model[mv.Model]; ok {
		return price
	}
	return p.Runtime[mv.Runtime.Kind]
}

// Price is the current price per hour of one replica of a model version
// in the state; ok is false when the version is unknown or has no price
// (none set, or 0). The admin API prices profiles with it.
func (a *Autoscaler) Price(model, version string) (perReplicaHour float64, ok bool) {
	mv, found := a.store.Snapshot().Version(model, version)
	if !found {
		return 0, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	price := a.pricing.Price(mv)
	return price, price > 0
}
