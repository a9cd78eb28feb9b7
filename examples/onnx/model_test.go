package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/advancedclimatesystems/gonnx"
	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"google.golang.org/protobuf/proto"
)

// tolerance is the largest difference from torch's outputs the tests accept.
const tolerance = 1e-4

// models are the graphs testdata/make_mlp.py writes; both compute the same
// function, so mlp_expected.json holds the outputs of either.
var models = []string{"testdata/mlp.onnx", "testdata/mlp_matmul.onnx"}

type expected struct {
	Ops         map[string][]string `json:"ops"`
	InputWidth  int                 `json:"input_width"`
	OutputWidth int                 `json:"output_width"`
	Inputs      [][]float32         `json:"inputs"`
	Outputs     [][]float64         `json:"outputs"`
}

func loadExpected(t testing.TB) *expected {
	t.Helper()
	b, err := os.ReadFile("testdata/mlp_expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Inputs) == 0 || len(e.Inputs) != len(e.Outputs) {
		t.Fatalf("mlp_expected.json: %d inputs, %d outputs", len(e.Inputs), len(e.Outputs))
	}
	return &e
}

func loadModel(t testing.TB, path string) *onnxModel {
	t.Helper()
	m, err := loadONNXModel(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func items(rows [][]float32) [][]byte {
	out := make([][]byte, len(rows))
	for i, r := range rows {
		out[i] = rpc.AppendFloat32s(nil, r)
	}
	return out
}

// maxDiff parses an output item and returns its largest absolute difference
// from want.
func maxDiff(t *testing.T, got rpc.Output, want []float64) float64 {
	t.Helper()
	if got.Err != "" {
		t.Fatalf("item error: %s", got.Err)
	}
	var v []float64
	if err := json.Unmarshal(got.Data, &v); err != nil {
		t.Fatalf("output %q is not a JSON array of numbers: %v", got.Data, err)
	}
	if len(v) != len(want) {
		t.Fatalf("output has %d values, want %d", len(v), len(want))
	}
	var d float64
	for i := range v {
		d = max(d, math.Abs(v[i]-want[i]))
	}
	return d
}

func TestMatchesTorch(t *testing.T) {
	e := loadExpected(t)
	for _, path := range models {
		t.Run(path, func(t *testing.T) {
			m := loadModel(t, path)
			if m.width != e.InputWidth || m.fixedBatch != 0 {
				t.Fatalf("width %d, fixed batch %d; want %d, dynamic", m.width, m.fixedBatch, e.InputWidth)
			}
			wantPre := 0
			if path == "testdata/mlp.onnx" {
				wantPre = 2 // both Linear layers: Gemm with transB=1
			}
			if m.pretransposed != wantPre {
				t.Errorf("%d Gemm weights pre-transposed, want %d", m.pretransposed, wantPre)
			}
			ctx := context.Background()

			// The whole set as one batch.
			outs, err := m.Predict(ctx, items(e.Inputs))
			if err != nil {
				t.Fatal(err)
			}
			if len(outs) != len(e.Inputs) {
				t.Fatalf("%d outputs for %d inputs", len(outs), len(e.Inputs))
			}
			var worst float64
			for i := range outs {
				worst = max(worst, maxDiff(t, outs[i], e.Outputs[i]))
			}

			// Each item alone (batch of 1) must agree too.
			for i, in := range e.Inputs {
				one, err := m.Predict(ctx, items([][]float32{in}))
				if err != nil {
					t.Fatal(err)
				}
				worst = max(worst, maxDiff(t, one[0], e.Outputs[i]))
			}
			t.Logf("ops %v: max abs difference from torch %.3g", e.Ops[strings.TrimPrefix(path, "testdata/")], worst)
			if worst > tolerance {
				t.Fatalf("max abs difference from torch %g > %g", worst, tolerance)
			}
		})
	}
}

func TestItemErrors(t *testing.T) {
	e := loadExpected(t)
	m := loadModel(t, models[0])
	good := items(e.Inputs[:2])
	inputs := [][]byte{
		good[0],
		nil,                          // empty
		good[0][:4*(e.InputWidth-1)], // one value short
		append(good[1][:len(good[1]):len(good[1])], 0, 0, 0, 0), // one value long
		good[1],
		{1, 2, 3}, // not a whole float32
	}
	outs, err := m.Predict(context.Background(), inputs)
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != len(inputs) {
		t.Fatalf("%d outputs for %d inputs", len(outs), len(inputs))
	}
	for i, o := range outs {
		switch i {
		case 0, 4:
			want := e.Outputs[0]
			if i == 4 {
				want = e.Outputs[1]
			}
			if d := maxDiff(t, o, want); d > tolerance {
				t.Errorf("item %d: difference %g", i, d)
			}
		default:
			if o.Err == "" || o.Data != nil {
				t.Errorf("item %d (%d bytes): got %+v, want an item error", i, len(inputs[i]), o)
			} else if !strings.Contains(o.Err, fmt.Sprintf("takes %d float32 values", e.InputWidth)) {
				t.Errorf("item %d: unhelpful error %q", i, o.Err)
			}
		}
	}

	// A batch with no good item is still a result, not a failure.
	outs, err = m.Predict(context.Background(), inputs[1:3])
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range outs {
		if o.Err == "" {
			t.Errorf("item %d: no error", i)
		}
	}
}

func TestCanceledContext(t *testing.T) {
	e := loadExpected(t)
	m := loadModel(t, models[0])
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Predict(ctx, items(e.Inputs[:1])); err == nil {
		t.Fatal("Predict with a canceled context succeeded")
	}
}

// TestConcurrent runs several batches at once (the server computes up to
// MaxInFlight requests per connection in parallel); run it with -race.
func TestConcurrent(t *testing.T) {
	e := loadExpected(t)
	m := loadModel(t, models[0])
	in := items(e.Inputs)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := 1 + g%len(in)
			outs, err := m.Predict(context.Background(), in[:k])
			if err != nil {
				errs <- err
				return
			}
			for i, o := range outs {
				var v []float64
				if err := json.Unmarshal(o.Data, &v); err != nil {
					errs <- err
					return
				}
				for j := range v {
					if math.Abs(v[j]-e.Outputs[i][j]) > tolerance {
						errs <- fmt.Errorf("goroutine %d item %d: %v, want %v", g, i, v, e.Outputs[i])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestFixedBatch serves a graph exported without a dynamic batch axis: the
// model runs in chunks of the fixed size, padding the last.
func TestFixedBatch(t *testing.T) {
	e := loadExpected(t)
	b, err := os.ReadFile(models[0])
	if err != nil {
		t.Fatal(err)
	}
	mp, err := gonnx.ModelProtoFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	mp.GetGraph().GetInput()[0].GetType().GetTensorType().GetShape().GetDim()[0].Value = &onnx.TensorShapeProto_Dimension_DimValue{DimValue: 4}
	b, err = proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := newONNXModel(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.fixedBatch != 4 {
		t.Fatalf("fixed batch %d, want 4", m.fixedBatch)
	}
	outs, err := m.Predict(context.Background(), items(e.Inputs)) // 9 items: 4 + 4 + 1 padded
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range outs {
		if d := maxDiff(t, o, e.Outputs[i]); d > tolerance {
			t.Errorf("item %d: difference %g", i, d)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := loadONNXModel("testdata/missing.onnx"); err == nil {
		t.Error("loading a missing file succeeded")
	}
	if _, err := newONNXModel([]byte("not a protobuf")); err == nil {
		t.Error("loading garbage succeeded")
	}

	b, err := os.ReadFile(models[0])
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*onnx.ModelProto){
		"dynamic feature axis": func(mp *onnx.ModelProto) {
			mp.GetGraph().GetInput()[0].GetType().GetTensorType().GetShape().GetDim()[1].Value = &onnx.TensorShapeProto_Dimension_DimParam{DimParam: "features"}
		},
		"int64 input": func(mp *onnx.ModelProto) {
			mp.GetGraph().GetInput()[0].GetType().GetTensorType().ElemType = 7 // INT64
		},
		"unsupported operator": func(mp *onnx.ModelProto) {
			mp.GetGraph().GetNode()[3].OpType = "LeakyRelu"
		},
		"opset 14": func(mp *onnx.ModelProto) {
			mp.GetOpsetImport()[0].Version = 14 // gonnx implements opset 13 only
		},
		"no input": func(mp *onnx.ModelProto) {
			mp.GetGraph().Input = nil
		},
	} {
		mp, err := gonnx.ModelProtoFromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		edit(mp)
		eb, err := proto.Marshal(mp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newONNXModel(eb); err == nil {
			t.Errorf("%s: loaded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestFormatRows(t *testing.T) {
	vals := []float32{0.1, -2.5e-8, 3, float32(math.NaN()), float32(math.Inf(1)), 1e30}
	rows, err := formatRows(vals, len(vals), 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(rows[0]), "[0.1,-2.5e-08,3]"; got != want {
		t.Errorf("row 0 = %s, want %s", got, want)
	}
	if got, want := string(rows[1]), "[null,null,1e+30]"; got != want {
		t.Errorf("row 1 = %s, want %s", got, want)
	}
	// The shortest float32 form reads back as the same float32.
	for _, v := range []float32{0.1, 1.0 / 3, -7.006e-3, math.MaxFloat32, math.SmallestNonzeroFloat32} {
		rows, err := formatRows([]float32{v}, 1, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.Trim(string(rows[0]), "[]")
		back, err := strconv.ParseFloat(s, 32)
		if err != nil || float32(back) != v {
			t.Errorf("%v formatted as %s reads back as %v (%v)", v, s, float32(back), err)
		}
	}
	if rows, err := formatRows([]int64{1, 2, 3, 4}, 4, 1, 2); err != nil || string(rows[0]) != "[1,2]" || len(rows) != 1 {
		t.Errorf("int64 rows = %q, %v", rows, err)
	}
	if _, err := formatRows([]float32{1, 2, 3}, 3, 2, 2); err == nil {
		t.Error("3 values in 2 rows formatted")
	}
	if _, err := formatRows([]bool{true}, 1, 1, 1); err == nil {
		t.Error("bool output formatted")
	}
}

// TestServe runs the model behind the SDK's server and talks the contract to
// it over TCP: HELLO, a PREDICT with good and bad items, PING.
func TestServe(t *testing.T) {
	e := loadExpected(t)
	m := loadModel(t, models[0])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hello := rpc.Hello{Version: rpc.Version, InputType: rpc.Float32, MaxBatch: 16, Model: "mlp", ModelVersion: "7"}
	srv := rpc.NewServer(m, rpc.ServerOptions{Hello: hello})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	fr := rpc.NewFrameReader(c, rpc.DefaultMaxFrame)
	next := func() rpc.Message {
		t.Helper()
		typ, payload, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		msg, err := rpc.Decode(typ, payload)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}

	h, ok := next().(*rpc.Hello)
	if !ok || h.Model != "mlp" || h.ModelVersion != "7" || h.InputType != rpc.Float32 || h.MaxBatch != 16 {
		t.Fatalf("hello = %+v", h)
	}
	inputs := append(items(e.Inputs), rpc.AppendFloat32s(nil, []float32{1, 2, 3}))
	req := &rpc.Predict{ID: 42, Deadline: time.Now().Add(time.Minute).UnixNano(), InputType: rpc.Float32, Inputs: inputs}
	if _, err := c.Write(rpc.AppendFrame(nil, req)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(rpc.AppendFrame(nil, &rpc.Ping{Nonce: 9})); err != nil {
		t.Fatal(err)
	}
	var gotResult, gotPong bool
	for !gotResult || !gotPong {
		switch msg := next().(type) {
		case *rpc.Pong:
			if msg.Nonce != 9 {
				t.Fatalf("pong %+v", msg)
			}
			gotPong = true
		case *rpc.Result:
			if msg.ID != 42 || len(msg.Outputs) != len(inputs) {
				t.Fatalf("result id %d with %d outputs", msg.ID, len(msg.Outputs))
			}
			for i := range e.Inputs {
				if d := maxDiff(t, msg.Outputs[i], e.Outputs[i]); d > tolerance {
					t.Errorf("item %d: difference %g", i, d)
				}
			}
			if last := msg.Outputs[len(inputs)-1]; last.Err == "" {
				t.Errorf("short item: %+v, want an item error", last)
			}
			gotResult = true
		default:
			t.Fatalf("unexpected %T %+v", msg, msg)
		}
	}
}

func BenchmarkPredict(b *testing.B) {
	e := loadExpected(b)
	for _, path := range models {
		m := loadModel(b, path)
		for _, n := range []int{1, 64} {
			in := make([][]byte, n)
			for i := range in {
				in[i] = rpc.AppendFloat32s(nil, e.Inputs[i%len(e.Inputs)])
			}
			b.Run(fmt.Sprintf("%s/batch=%d", strings.TrimSuffix(strings.TrimPrefix(path, "testdata/"), ".onnx"), n), func(b *testing.B) {
				for b.Loop() {
					if _, err := m.Predict(context.Background(), in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
