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

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/state"
)

// Version is reported by the OIP server metadata endpoint.
const Version = "0.1.0"

// The Open Inference Protocol v2 (KServe's "V2", Triton's HTTP API)
// addresses models, not apps: {m} is a model name, its current version
// unless /versions/{v} names another. An infer request's deadline is the
// smallest of its "timeout" parameter (microseconds, as Triton reads it),
// the SLOs of the apps linked to the model, or Options.OIPTimeout when no
// app links it; its "priority" parameter sets its class (see oipLevel and
// oipClass).
func (p *Proxy) oipRoutes(r *mux.Router) {
	r.HandleFunc("/v2", p.oipServerMetadata).Methods(http.MethodGet)
	r.HandleFunc("/v2/health/live", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, []byte(`{"live":true}`)) }).Methods(http.MethodGet)
	r.HandleFunc("/v2/health/ready", p.oipServerReady).Methods(http.MethodGet)
	for _, base := range []string{"/v2/models/{model}", "/v2/models/{model}/versions/{version}"} {
		r.HandleFunc(base, p.oipModelMetadata).Methods(http.MethodGet)
		r.HandleFunc(base+"/ready", p.oipModelReady).Methods(http.MethodGet)
		r.HandleFunc(base+"/infer", p.oipInfer).Methods(http.MethodPost)
	}
}

func (p *Proxy) oipServerMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, []byte(`{"name":"sloproxy","version":"`+Version+`","extensions":[]}`))
}

func (p *Proxy) oipServerReady(w http.ResponseWriter, _ *http.Request) {
	if err := p.ServerReady(); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, []byte(`{"ready":true}`))
}

// oipDatatype is the OIP tensor datatype of an input type.
func oipDatatype(it state.InputType) string {
	switch it {
	case state.InputFloat32:
		return "FP32"
	case state.InputFloat64:
		return "FP64"
	case state.InputInt32:
		return "INT32"
	}
	return "BYTES"
}

func (p *Proxy) oipModelMetadata(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	md, err := p.ModelMetadata(vars["model"], vars["version"])
	if err != nil {
		writeError(w, err)
		return
	}
	b, _ := json.Marshal(md)
	writeJSON(w, b)
}

// oipModelReady answers 200 when the version (the model's current one
// unless the path names another) has a ready replica on this proxy: the
// rule /v2/health/ready applies to each app's models.
func (p *Proxy) oipModelReady(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	if err := p.ModelReady(vars["model"], vars["version"]); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, []byte(`{"ready":true}`))
}

type oipInferRequest struct {
	ID         string                     `json:"id"`
	Parameters map[string]json.RawMessage `json:"parameters"`
	Inputs     []oipTensor                `json:"inputs"`
	Outputs    []struct {
		Name string `json:"name"`
	} `json:"outputs"`
}

type oipTensor struct {
	Name     string          `json:"name"`
	Shape    []int64         `json:"shape"`
	Datatype string          `json:"datatype"`
	Data     json.RawMessage `json:"data"`
}

func (p *Proxy) oipInfer(w http.ResponseWriter, r *http.Request) {
	body, err := p.readBody(w, r)
	if err != nil {
		p.oipReject(w, err)
		return
	}
	req, err := p.decodeInfer(body)
	if err != nil {
		p.oipReject(w, err)
		return
	}
	vars := mux.Vars(r)
	req.Model, req.Version = vars["model"], vars["version"]
	// Admission learns each row's finish when the answer is written (see
	// dispatch.Delivery).
	var dl dispatch.Delivery
	defer func() { dl.Done(time.Now()) }()
	res, err := p.Infer(dispatch.WithDelivery(r.Context(), &dl), "oip", req)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := map[string]any{"model_name": res.Model, "model_version": res.Version, "outputs": []any{oipOutput(res.Outputs)}}
	if req.ID != "" {
		resp["id"] = req.ID
	}
	if params := defaultParams(res); params != nil {
		resp["parameters"] = params
	}
	b, _ := json.Marshal(resp)
	writeJSON(w, b)
}

// The response parameters that flag an app's default output.
const (
	// ParamDefault is true when a row got the app's default output.
	ParamDefault = "sloproxy_default"
	// ParamDefaultRows lists those rows, comma-separated.
	ParamDefaultRows = "sloproxy_default_rows"
	// ParamDefaultExplanation is the first one's reason.
	ParamDefaultExplanation = "sloproxy_default_explanation"
)

// defaultParams returns the response parameters flagging res's default
// outputs; nil when there are none.
func defaultParams(res *InferResult) map[string]any {
	rows := res.DefaultRows()
	if rows == "" {
		return nil
	}
	return map[string]any{ParamDefault: true, ParamDefaultRows: rows, ParamDefaultExplanation: res.Explanation}
}

// decodeInfer decodes an OIP infer body into the request its inputs'
// rows, encoded for the RPC by each input's datatype.
func (p *Proxy) decodeInfer(body []byte) (*InferRequest, error) {
	if err := checkUTF8(body); err != nil {
		return nil, err
	}
	var req oipInferRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errorf(ErrBadInput, "body is not an inference request: %v", err)
	}
	timeout, err := oipTimeout(&req)
	if err != nil {
		return nil, err
	}
	level, err := oipLevel(&req)
	if err != nil {
		return nil, err
	}
	ir := &InferRequest{ID: req.ID, Timeout: timeout, Priority: level, Inputs: make([]InferInput, len(req.Inputs))}
	for _, o := range req.Outputs {
		ir.Outputs = append(ir.Outputs, o.Name)
	}
	for i := range req.Inputs {
		if ir.Inputs[i], err = p.oipInput(&req.Inputs[i]); err != nil {
			return nil, err
		}
	}
	return ir, nil
}

// oipError is the request's error from its rows' dispatcher errors, as
// predict stores them (nil when every row was answered), typed as Triton
// maps it: a model refusing a row is the caller's input (400), a deadline
// or a replica failure is unavailable (503), a row admission refused is
// 429 with a Retry-After of 1s, a caller gone stays canceled. The row's
// own error stays wrapped, for the gRPC codes.
func oipError(answers []answer, model string, timeout time.Duration) error {
	for row := range answers {
		err := answers[row].err
		switch {
		case err == nil:
			continue
		case isShed(err):
			return &shedError{err: fmt.Errorf("row %d: %w", row, err), status: http.StatusTooManyRequests, retryAfter: time.Second}
		case errors.Is(err, dispatch.ErrDeadline), errors.Is(err, context.DeadlineExceeded): // a doomed query's error is ErrDeadline too
			return fmt.Errorf("%w: deadline: model %s did not answer row %d within %v (%w)", ErrUnavailable, model, row, timeout, err)
		case errors.As(err, new(*dispatch.ModelError)):
			return fmt.Errorf("%w: row %d: %w", ErrBadInput, row, err)
		case rpc.IsCode(err, rpc.FrameTooLarge):
			return fmt.Errorf("row %d: %w", row, err)
		case errors.Is(err, context.Canceled):
			return errClientGone(err)
		default:
			return errorf(ErrUnavailable, "model %s failed on row %d: %v", model, row, err)
		}
	}
	return nil
}

// oipReject answers an OIP request that never became a query, counted
// and logged as the gRPC front door's are (see Reject).
func (p *Proxy) oipReject(w http.ResponseWriter, err error) {
	writeError(w, p.Reject("oip", err))
}

// oipTimeout is the request's "timeout" parameter (see TimeoutParam); 0
// when absent.
func oipTimeout(req *oipInferRequest) (time.Duration, error) {
	raw, ok := req.Parameters["timeout"]
	if !ok {
		return 0, nil
	}
	us, err := strconv.ParseUint(string(raw), 10, 64)
	d, err := TimeoutParam(us, err == nil)
	if err != nil {
		return 0, fmt.Errorf("%w, got %s", err, clipToken(raw))
	}
	return d, nil
}

// TimeoutParam is the deadline budget of an OIP request's "timeout"
// parameter, us microseconds as Triton reads it, that a transport read
// as an unsigned integer (valid false when it held something else). An
// invalid or zero timeout is bad input; one beyond time.Duration's range
// is 0, which cannot shorten a deadline.
func TimeoutParam(us uint64, valid bool) (time.Duration, error) {
	if !valid || us == 0 {
		return 0, errorf(ErrBadInput, "parameter \"timeout\" must be a positive integer number of microseconds")
	}
	if us >= uint64(math.MaxInt64/int64(time.Microsecond)) {
		return 0, nil
	}
	return time.Duration(us) * time.Microsecond, nil
}

// oipLevel is the request's "priority" parameter (see PriorityParam); 0
// when absent.
func oipLevel(req *oipInferRequest) (uint32, error) {
	raw, ok := req.Parameters["priority"]
	if !ok {
		return 0, nil
	}
	level, err := strconv.ParseUint(string(raw), 10, 64)
	l, err := PriorityParam(level, err == nil)
	if err != nil {
		return 0, fmt.Errorf("%w, got %s", err, clipToken(raw))
	}
	return l, nil
}

// PriorityParam is the priority level of an OIP request's "priority"
// parameter, as Triton reads it: 0 is the default level, 1 the highest,
// larger numbers lower. level is what a transport read as an unsigned
// integer (valid false when it held something else); one invalid or above
// math.MaxInt32 is bad input.
func PriorityParam(level uint64, valid bool) (uint32, error) {
	if !valid || level > math.MaxInt32 {
		return 0, errorf(ErrBadInput, "parameter \"priority\" must be a non-negative integer (1 is the highest level)")
	}
	return uint32(level), nil
}

// oipInput checks one input tensor's shape against its data and splits
// the data along dimension 0 into rows, encoded by the tensor's datatype.
func (p *Proxy) oipInput(t *oipTensor) (InferInput, error) {
	in := InferInput{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape}
	name := clip.String(t.Name) // it appears only in errors
	if len(t.Shape) == 0 {
		return in, errorf(ErrBadInput, "input %q has no shape; dimension 0 is the batch", name)
	}
	n, per, err := ShapeSize(t.Shape, p.opts.MaxBodyBytes)
	if err != nil {
		return in, errorf(ErrBadInput, "input %q: %v", name, err)
	}
	if n > int64(p.opts.MaxInputBatch) {
		return in, errorf(ErrBadInput, "input %q has %d rows; the limit is %d", name, n, p.opts.MaxInputBatch)
	}
	it, ok := oipInputType(t.Datatype)
	if !ok {
		return in, nil // no model takes it; Infer names the datatype it wants
	}
	if t.Datatype == "BYTES" && per != 1 {
		return in, errorf(ErrBadInput, "input %q: a BYTES input takes one element per row, shape %s has %d", name, clipShape(t.Shape), per)
	}
	var flat []json.RawMessage
	if err := flatten(t.Data, &flat, 0); err != nil {
		return in, errorf(ErrBadInput, "input %q: data: %v", name, err)
	}
	if int64(len(flat)) != n*per {
		return in, errorf(ErrBadInput, "input %q: shape %s needs %d elements, data has %d", name, clipShape(t.Shape), n*per, len(flat))
	}
	in.Rows = make([][]byte, n)
	for i := range in.Rows {
		row := flat[int64(i)*per : int64(i+1)*per]
		what := inputName{name: name, row: i, kind: nameTensorRow}
		if t.Datatype == "BYTES" {
			in.Rows[i], err = encodeInputAt(row[0], state.InputString, what)
		} else {
			in.Rows[i], err = encodeRow(row, it, what)
		}
		if err != nil {
			return in, err
		}
	}
	return in, nil
}

// oipInputType is the input type of an OIP datatype sloproxy takes.
func oipInputType(datatype string) (state.InputType, bool) {
	switch datatype {
	case "FP32":
		return state.InputFloat32, true
	case "FP64":
		return state.InputFloat64, true
	case "INT32":
		return state.InputInt32, true
	case "BYTES":
		return state.InputString, true
	}
	return "", false
}

// ShapeSize returns the rows (shape[0]) and the elements per row of a
// tensor shape. Every element takes at least one byte of a body of at most
// maxBody bytes, so a shape of more elements than that is refused before a
// product can overflow: the count never wraps, and nothing is sized from a
// count the body could not fill.
func ShapeSize(shape []int64, maxBody int64) (rows, per int64, err error) {
	per = 1
	for i, d := range shape {
		if d < 0 {
			return 0, 0, fmt.Errorf("shape[%d] = %d is not a size", i, d)
		}
		if i > 0 {
			if d != 0 && per > maxBody/d {
				return 0, 0, fmt.Errorf("shape %s has more elements than a body of at most %d bytes holds", clipShape(shape), maxBody)
			}
			per *= d
		}
	}
	rows = shape[0]
	if per != 0 && rows > maxBody/per {
		return 0, 0, fmt.Errorf("shape %s has more elements than a body of at most %d bytes holds", clipShape(shape), maxBody)
	}
	return rows, per, nil
}

// clipShape formats a shape for an error message, clipped.
func clipShape(shape []int64) string { return clip.String(fmt.Sprint(shape)) }

// encodeRow encodes a row of number tokens.
func encodeRow(row []json.RawMessage, it state.InputType, what inputName) ([]byte, error) {
	b := make([]byte, 0, 2+len(row)*8)
	b = append(b, '[')
	for i, e := range row {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return encodeInputAt(append(b, ']'), it, what)
}

// flatten appends the leaves of a nested JSON array in row-major order.
func flatten(raw json.RawMessage, dst *[]json.RawMessage, depth int) error {
	if depth > 32 {
		return errors.New("nested too deeply")
	}
	if len(raw) == 0 || raw[0] != '[' {
		if depth == 0 {
			return errors.New("must be a JSON array")
		}
		*dst = append(*dst, raw)
		return nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return err
	}
	for _, e := range elems {
		if err := flatten(e, dst, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// oipOutput builds the output tensor's JSON (see OutputTensor).
func oipOutput(outs [][]byte) map[string]any {
	datatype, shape, numbers := OutputTensor(outs)
	if datatype == "FP64" {
		return map[string]any{"name": "output", "datatype": datatype, "shape": shape, "data": numbers}
	}
	texts := make([]string, len(outs))
	for i, o := range outs {
		texts[i] = string(o)
	}
	return map[string]any{"name": "output", "datatype": datatype, "shape": shape, "data": texts}
}

// OutputTensor returns the OIP output tensor of the outputs of a request's
// rows: numeric (FP64, shape [n] or [n, k], the numbers row-major) when
// every output is a JSON number or an array of k numbers, else BYTES,
// shape [n], with each output's bytes as they are (numbers nil).
func OutputTensor(outs [][]byte) (datatype string, shape []int64, numbers []float64) {
	numeric := make([]float64, 0, len(outs))
	k := -1
	for _, o := range outs {
		var v any
		if json.Unmarshal(o, &v) != nil {
			k = -2
			break
		}
		switch x := v.(type) {
		case float64:
			if k != -1 && k != 0 {
				k = -2
			} else {
				k = 0
				numeric = append(numeric, x)
			}
		case []any:
			if len(x) == 0 || (k != -1 && k != len(x)) {
				k = -2
				break
			}
			k = len(x)
			for _, e := range x {
				f, ok := e.(float64)
				if !ok {
					k = -2
					break
				}
				numeric = append(numeric, f)
			}
		default:
			k = -2
		}
		if k == -2 {
			break
		}
	}
	if k >= 0 && len(outs) > 0 {
		shape := []int64{int64(len(outs))}
		if k > 0 {
			shape = append(shape, int64(k))
		}
		return "FP64", shape, numeric
	}
	return "BYTES", []int64{int64(len(outs))}, nil
}
