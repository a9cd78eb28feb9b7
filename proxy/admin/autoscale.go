package admin

import (
	"context"
	"fmt"
	"math"
	"net/http"

	"github.com/sloproxy/sloproxy/state"
)

// Usage is what a model version's replicas used, as the answering proxy's
// autoscaler counted it (see package autoscale).
type Usage struct {
	// ReplicaSeconds is the desired replica count integrated over time
	// since the proxy first saw the version.
	ReplicaSeconds float64 `json:"replica_seconds"`
	// Cost is ReplicaSeconds at the version's price per replica-hour.
	Cost float64 `json:"cost"`
	// CostPer1kPredictions is the cost over the last five minutes per
	// 1,000 queries the version's replicas answered through this proxy in
	// them; absent while they answered none.
	CostPer1kPredictions *float64 `json:"cost_per_1k_predictions,omitempty"`
}

// NewUsage is a Usage of replicaSeconds, cost and costPer1k, the last NaN
// when unknown.
func NewUsage(replicaSeconds, cost, costPer1k float64) Usage {
	u := Usage{ReplicaSeconds: replicaSeconds, Cost: cost}
	if !math.IsNaN(costPer1k) {
		u.CostPer1kPredictions = &costPer1k
	}
	return u
}

// PUT /api/v1/models/{model}/versions/{version}/autoscale sets the
// version's autoscaling ({"min", "max", "target", "scale_down_delay_s"});
// a body of null turns it off, leaving the count where it is. It answers
// the model.
func (h *handler) setAutoscale(w http.ResponseWriter, r *http.Request) error {
	model, version, err := modelVersion(r)
	if err != nil {
		return err
	}
	var a *state.Autoscale
	if err := decode(w, r, &a); err != nil {
		return err
	}
	if a != nil && h.maxReplicas > 0 && a.Max > h.maxReplicas {
		return badRequest("model %q version %q: autoscale.max %d: above limits.max_replicas (%d)", model, version, a.Max, h.maxReplicas)
	}
	if err := h.store.SetAutoscale(r.Context(), model, version, a); err != nil {
		return err
	}
	return h.writeModel(w, http.StatusOK, model)
}

// SetAutoscale sets the autoscaling of version of model; nil turns it off.
func (c *Client) SetAutoscale(ctx context.Context, model, version string, a *state.Autoscale) (ModelView, error) {
	var m ModelView
	err := c.do(ctx, http.MethodPut, fmt.Sprintf("%s/%s/versions/%s/autoscale", pathModels, seg(model), seg(version)), a, &m)
	return m, err
}
