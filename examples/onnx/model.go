package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/advancedclimatesystems/gonnx"
	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"gorgonia.org/tensor"
)

// supportedOpset is the one ONNX operator set gonnx v1.1.0 implements.
const supportedOpset = 13

// onnxModel runs an ONNX graph with one float32 input of shape (batch, d1, …, dk)
// and answers each item of a batch with the matching row of the graph's first
// output, as a JSON array of numbers.
//
// Items are flat little-endian float32 vectors of d1·…·dk values; the whole
// batch is stacked into one tensor and run once. A Predict is safe to call from
// several goroutines at once: gonnx builds a fresh tensor map per run and treats
// the model's initializers as read-only.
type onnxModel struct {
	m *gonnx.Model

	inputName  string
	outputName string
	// featShape is the input's shape without the batch axis; width its product.
	featShape []int
	width     int
	// fixedBatch is the input's batch size when the graph fixes it (exported
	// without a dynamic batch axis), 0 when the axis is dynamic. A fixed-batch
	// graph runs in chunks of that size, the last one padded with zeros.
	fixedBatch int
	// pretransposed counts the Gemm weights transposed at load (see
	// pretransposeGemmWeights).
	pretransposed int
}

// loadONNXModel reads an .onnx file and checks that it is a graph this
// container can serve.
func loadONNXModel(path string) (*onnxModel, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return newONNXModel(b)
}

func newONNXModel(b []byte) (*onnxModel, error) {
	mp, err := gonnx.ModelProtoFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("parse onnx model: %w", err)
	}
	g := mp.GetGraph()
	if g == nil {
		return nil, errors.New("onnx model has no graph")
	}

	// Graph inputs may also list the initializers (IR version < 4); the
	// model's real inputs are the others.
	params := make(map[string]bool, len(g.GetInitializer()))
	for _, t := range g.GetInitializer() {
		params[t.GetName()] = true
	}
	var inputs []*onnx.ValueInfoProto
	for _, in := range g.GetInput() {
		if !params[in.GetName()] {
			inputs = append(inputs, in)
		}
	}
	if len(inputs) != 1 {
		return nil, fmt.Errorf("onnx model has %d inputs; this container serves models with exactly one", len(inputs))
	}
	if len(g.GetOutput()) == 0 {
		return nil, errors.New("onnx model has no outputs")
	}
	in := inputs[0]
	tt := in.GetType().GetTensorType()
	if tt == nil {
		return nil, fmt.Errorf("onnx input %q is not a tensor", in.GetName())
	}
	if et := onnx.TensorProto_DataType(tt.GetElemType()); et != onnx.TensorProto_FLOAT {
		return nil, fmt.Errorf("onnx input %q has element type %v; this container feeds float32", in.GetName(), et)
	}
	dims := tt.GetShape().GetDim()
	if len(dims) < 2 {
		return nil, fmt.Errorf("onnx input %q has rank %d; want (batch, features…), rank ≥ 2", in.GetName(), len(dims))
	}

	om := &onnxModel{
		inputName:  in.GetName(),
		outputName: g.GetOutput()[0].GetName(),
		width:      1,
	}
	if v := dims[0].GetDimValue(); v > 0 {
		om.fixedBatch = int(v)
	}
	for i, d := range dims[1:] {
		v := d.GetDimValue()
		if v <= 0 {
			return nil, fmt.Errorf("onnx input %q: axis %d is dynamic (%q); only the batch axis may be", in.GetName(), i+1, d.GetDimParam())
		}
		om.featShape = append(om.featShape, int(v))
		om.width *= int(v)
	}

	// gonnx picks its operator set by the highest opset the model imports
	// and implements exactly one.
	var opset int64
	for _, o := range mp.GetOpsetImport() {
		opset = max(opset, o.GetVersion())
	}
	if opset != supportedOpset {
		return nil, fmt.Errorf("onnx model imports opset %d; gonnx implements opset %d only (torch.onnx.export(..., opset_version=%d))",
			opset, supportedOpset, supportedOpset)
	}

	om.pretransposed = pretransposeGemmWeights(g)
	om.m, err = gonnx.NewModel(mp)
	if err != nil {
		return nil, fmt.Errorf("load onnx model: %w", err)
	}
	// Fail at start-up, not on the first request, when the graph uses an
	// operator gonnx does not implement.
	for _, n := range g.GetNode() {
		if _, err := om.m.GetOperator(n.GetOpType()); err != nil {
			return nil, fmt.Errorf("onnx node %q: %w", n.GetName(), err)
		}
	}
	return om, nil
}

// pretransposeGemmWeights rewrites each Gemm node whose B is a 2-D float32
// initializer used by that node only, with transB=1 (how torch exports
// nn.Linear), into the same Gemm on the transposed initializer with transB=0.
// gonnx would otherwise copy-transpose the weights on every run, which makes a
// small MLP about three times slower. It returns the number of nodes changed.
func pretransposeGemmWeights(g *onnx.GraphProto) int {
	inits := make(map[string]*onnx.TensorProto, len(g.GetInitializer()))
	for _, t := range g.GetInitializer() {
		inits[t.GetName()] = t
	}
	uses := map[string]int{}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			uses[in]++
		}
	}
	for _, out := range g.GetOutput() {
		uses[out.GetName()]++
	}

	changed := 0
	for _, n := range g.GetNode() {
		if n.GetOpType() != "Gemm" || len(n.GetInput()) < 2 {
			continue
		}
		var transB *onnx.AttributeProto
		for _, a := range n.GetAttribute() {
			if a.GetName() == "transB" {
				transB = a
			}
		}
		b := inits[n.GetInput()[1]]
		if transB == nil || transB.GetI() != 1 || b == nil || uses[b.GetName()] != 1 ||
			onnx.TensorProto_DataType(b.GetDataType()) != onnx.TensorProto_FLOAT || len(b.GetDims()) != 2 {
			continue
		}
		t, err := onnx.TensorFromProto(b)
		if err != nil {
			continue
		}
		v, ok := t.Data().([]float32)
		rows, cols := int(b.GetDims()[0]), int(b.GetDims()[1])
		if !ok || len(v) != rows*cols {
			continue
		}
		tr := make([]float32, len(v))
		for r := range rows {
			for c := range cols {
				tr[c*rows+r] = v[r*cols+c]
			}
		}
		b.Dims = []int64{int64(cols), int64(rows)}
		b.FloatData, b.RawData = tr, nil
		transB.I = 0
		changed++
	}
	return changed
}

// Predict stacks the well-formed items into one (n, d…) tensor, runs the graph
// once and formats each item's output row. Items whose length is not the
// model's input width get an item error; an error from the graph fails the
// whole request (the server then retries the items one by one).
func (m *onnxModel) Predict(ctx context.Context, inputs [][]byte) ([]rpc.Output, error) {
	outs := make([]rpc.Output, len(inputs))
	good := make([]int, 0, len(inputs))
	for i, b := range inputs {
		if len(b) != 4*m.width {
			outs[i].Err = fmt.Sprintf("input has %d bytes (%d float32 values); the model takes %d float32 values (%d bytes)",
				len(b), len(b)/4, m.width, 4*m.width)
			continue
		}
		good = append(good, i)
	}
	if len(good) == 0 {
		return outs, nil
	}

	chunk := len(good)
	if m.fixedBatch > 0 {
		chunk = m.fixedBatch
	}
	for start := 0; start < len(good); start += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		idx := good[start:min(start+chunk, len(good))]
		rows, err := m.run(inputs, idx, chunk)
		if err != nil {
			return nil, err
		}
		for j, i := range idx {
			outs[i].Data = rows[j]
		}
	}
	return outs, nil
}

// run computes the outputs of inputs[idx...] as one batch of n ≥ len(idx)
// rows (rows past len(idx) are zero padding for fixed-batch graphs).
func (m *onnxModel) run(inputs [][]byte, idx []int, n int) (rows [][]byte, err error) {
	// gorgonia's tensor package panics on some shape mismatches; make them
	// errors like any other failure of the graph.
	defer func() {
		if r := recover(); r != nil {
			rows, err = nil, fmt.Errorf("onnx run: panic: %v", r)
		}
	}()
	if m.fixedBatch == 0 {
		n = len(idx)
	}
	data := make([]float32, n*m.width)
	for j, i := range idx {
		rpc.DecodeFloat32s(data[j*m.width:(j+1)*m.width], inputs[i])
	}
	shape := append([]int{n}, m.featShape...)
	x := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))

	res, err := m.m.Run(gonnx.Tensors{m.inputName: x})
	if err != nil {
		return nil, fmt.Errorf("onnx run: %w", err)
	}
	y, ok := res[m.outputName]
	if !ok || y == nil {
		return nil, fmt.Errorf("onnx run: no tensor for output %q", m.outputName)
	}
	if s := y.Shape(); len(s) == 0 || s[0] != n {
		return nil, fmt.Errorf("onnx output %q has shape %v; want the batch (%d) on axis 0", m.outputName, s, n)
	}
	// A view (e.g. the result of a Transpose) must be copied out before its
	// backing array is in logical row-major order.
	d, ok := y.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("onnx run: unexpected output tensor type %T", y)
	}
	if d.IsMaterializable() {
		if d, ok = d.Materialize().(*tensor.Dense); !ok {
			return nil, errors.New("onnx run: cannot materialize the output tensor")
		}
	}
	return formatRows(d.Data(), d.Shape().TotalSize(), len(idx), n)
}

// formatRows splits data, a row-major (n, …) array of size values, into n
// rows and formats the first k as JSON arrays.
func formatRows(data any, size, k, n int) ([][]byte, error) {
	var have int
	var appendAt func(dst []byte, i int) []byte
	switch v := data.(type) {
	case []float32:
		have = len(v)
		appendAt = func(dst []byte, i int) []byte { return appendFloat(dst, float64(v[i]), 32) }
	case []float64:
		have = len(v)
		appendAt = func(dst []byte, i int) []byte { return appendFloat(dst, v[i], 64) }
	case []int64:
		have = len(v)
		appendAt = func(dst []byte, i int) []byte { return strconv.AppendInt(dst, v[i], 10) }
	case []int32:
		have = len(v)
		appendAt = func(dst []byte, i int) []byte { return strconv.AppendInt(dst, int64(v[i]), 10) }
	default:
		return nil, fmt.Errorf("onnx output has element type %T; this container formats float32, float64, int64 and int32", data)
	}
	if have < size {
		return nil, fmt.Errorf("onnx output holds %d values for a shape of %d", have, size)
	}
	if size%n != 0 {
		return nil, fmt.Errorf("onnx output has %d values, not a multiple of the batch size %d", size, n)
	}
	per := size / n
	rows := make([][]byte, k)
	for r := range k {
		b := make([]byte, 0, 2+per*12)
		b = append(b, '[')
		for c := range per {
			if c > 0 {
				b = append(b, ',')
			}
			b = appendAt(b, r*per+c)
		}
		rows[r] = append(b, ']')
	}
	return rows, nil
}

// appendFloat writes v as a JSON number in the shortest form that reads back
// as the same float of bitSize bits; NaN and ±Inf, which JSON lacks, as null.
func appendFloat(dst []byte, v float64, bitSize int) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, bitSize)
}
