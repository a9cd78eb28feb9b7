package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/answered"
	"github.com/sloproxy/sloproxy/internal/clip"
)

// feedbackTimeout bounds what one feedback does in Redis: finding its
// query (with the wait for its write) and updating the shared policy
// state.
const feedbackTimeout = 2 * time.Second

// feedbackRequest is the feedback API's body: the query, by its id or
// its input, and the true label.
type feedbackRequest struct {
	QueryID string          `json:"query_id"`
	Input   json.RawMessage `json:"input"`
	Label   json.RawMessage `json:"label"`
}

// serveFeedback serves POST /apps/{app}/feedback: it scores the answers
// of a recent query against the label and lets the app's policy learn.
// Bad input changes nothing.
func (p *Proxy) serveFeedback(w http.ResponseWriter, r *http.Request) {
	appName := mux.Vars(r)["app"]
	app, ok := p.opts.Store.Snapshot().App(appName)
	if !ok {
		writeError(w, errorf(ErrNotFound, "no app named %q", clip.String(appName)))
		return
	}
	body, err := p.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req feedbackRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, errorf(ErrBadInput, "body is not the JSON object {\"query_id\": ..., \"label\": ...} or {\"input\": ..., \"label\": ...}: %v", err))
		return
	}
	sel, spec := p.sel.Get(app.Name, app.Policy, app.Selection)
	switch {
	case len(req.Label) == 0:
		writeError(w, errorf(ErrBadInput, "body has no \"label\""))
		return
	case req.QueryID != "" && req.Input != nil:
		writeError(w, errorf(ErrBadInput, "body has both \"query_id\" and \"input\"; send one"))
		return
	case req.QueryID == "" && req.Input == nil:
		writeError(w, errorf(ErrBadInput, "body has neither \"query_id\" nor \"input\""))
		return
	}
	if err := spec.Output.CheckLabel(req.Label); err != nil {
		writeError(w, errorf(ErrBadInput, "\"label\": %v", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), feedbackTimeout)
	defer cancel()
	id := req.QueryID
	if req.Input != nil {
		in, err := encodeInput(req.Input, app.InputType, "input")
		if err != nil {
			writeError(w, err)
			return
		}
		id, ok, err = p.memory.IDOf(ctx, app.Name, in)
		switch {
		case err != nil: // Redis could not be reached
			writeError(w, memoryError(err))
			return
		case !ok:
			writeError(w, errorf(ErrNotFound, "no recent query of app %q had this input (%s)", app.Name, p.remembers()))
			return
		}
	}
	q, ok, err := p.memory.Take(ctx, id, app.Name)
	switch {
	case err != nil: // Redis could not be reached, or holds a record that cannot be read
		writeError(w, memoryError(err))
		return
	case !ok:
		writeError(w, errorf(ErrNotFound, "no recent query %q of app %q: unknown, already scored, or forgotten (%s)",
			clip.String(id), app.Name, p.remembers()))
		return
	}
	if err := spec.Output.CheckClass(req.Label, q.Outs); err != nil {
		p.memory.Restore(ctx, id, q) // bad input changes nothing: it stays scorable
		writeError(w, errorf(ErrBadInput, "\"label\": %v", err))
		return
	}
	rewards := make(map[string]float64, len(q.Choice.Arms)+1)
	gains := make([]float64, len(q.Choice.Arms))
	for j, arm := range q.Choice.Arms {
		gains[j] = math.NaN()
		if q.Outs[j] != nil {
			rewards[arm] = spec.Output.Reward(q.Outs[j], req.Label)
			gains[j] = spec.Output.Gain(rewards[arm])
		}
	}
	if err := sel.Feedback(ctx, q.Choice, gains); err != nil {
		p.memory.Restore(ctx, id, q)
		p.log.Warn("feedback: the policy state could not be updated", zap.String("app", app.Name), zap.String("query_id", id), zap.Error(err))
		writeError(w, errorf(ErrUnavailable, "the policy state could not be updated: %v", err))
		return
	}
	m := p.sel.Metrics()
	for j, arm := range q.Choice.Arms {
		if !math.IsNaN(gains[j]) {
			m.Scored(app.Name, arm, gains[j])
		}
	}
	if out := q.Shadow(); out != nil {
		rewards[q.Choice.Shadow] = spec.Output.Reward(out, req.Label)
		m.Scored(app.Name, q.Choice.Shadow, spec.Output.Gain(rewards[q.Choice.Shadow]))
	}
	writeJSON(w, appendFeedback(make([]byte, 0, 128), id, rewards))
}

// remembers says which answered queries feedback can reach.
func (p *Proxy) remembers() string {
	if ttl := p.memory.SharedTTL(); ttl > 0 {
		return fmt.Sprintf("the proxies sharing this Redis keep each answered query for %v", ttl)
	}
	return fmt.Sprintf("this proxy remembers its last %d answered queries; feedback must reach the proxy that answered", p.memory.Size())
}

// memoryError maps an error of the answered queries' memory to the query
// path's errors: a record that cannot be read is not found (it stays
// taken, so a retry cannot score it either), anything else unavailable.
func memoryError(err error) error {
	if errors.Is(err, answered.ErrUnreadable) {
		return errorf(ErrNotFound, "%v", err)
	}
	return errorf(ErrUnavailable, "%v", err)
}

// appendFeedback appends the feedback API's answer: the query's id and
// each answer's reward (null when it cannot be a number: a non-numeric
// output of a number app).
func appendFeedback(b []byte, id string, rewards map[string]float64) []byte {
	b = appendString(append(b, `{"query_id":`...), id)
	b = append(b, `,"rewards":{`...)
	first := true
	for arm, r := range rewards {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(appendString(b, arm), ':')
		if math.IsInf(r, 0) || math.IsNaN(r) {
			b = append(b, "null"...)
		} else {
			b = strconv.AppendFloat(b, r, 'g', -1, 64)
		}
	}
	return append(b, "}}"...)
}
