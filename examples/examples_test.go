// Tests of the example model containers as real processes over real
// sockets: real models trained here on scikit-learn's bundled digits data
// set, served by the containers, called through the Go RPC client.
package examples_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
)

// digits is what internal/testutil/testdata/train_digits.py writes.
type digits struct {
	dir     string
	X       [][]float64      `json:"X"`
	Y       []int            `json:"y"`
	Sklearn map[string][]int `json:"sklearn"`
	Proba   [][]float64      `json:"sklearn_proba_logreg"`
	Torch   [][]float64      `json:"torch"`
}

var (
	trainOnce sync.Once
	trained   *digits
	trainErr  error
)

// trainDigits trains the test models once per test binary.
func trainDigits(t *testing.T) *digits {
	t.Helper()
	testutil.RequirePython(t, "sklearn", "torch", "onnx")
	trainOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sloproxy-digits-")
		if err != nil {
			trainErr = err
			return
		}
		script := filepath.Join(testutil.RepoRoot(t), "internal", "testutil", "testdata", "train_digits.py")
		out, err := exec.Command(testutil.Python, script, "--out", dir).CombinedOutput()
		if err != nil {
			trainErr = fmt.Errorf("train_digits.py: %v\n%s", err, out)
			return
		}
		raw, err := os.ReadFile(filepath.Join(dir, "heldout.json"))
		if err != nil {
			trainErr = err
			return
		}
		d := &digits{dir: dir}
		trainErr = json.Unmarshal(raw, d)
		trained = d
	})
	if trainErr != nil {
		t.Fatal(trainErr)
	}
	return trained
}

func float64Item(x []float64) []byte { return rpc.AppendFloat64s(nil, x) }

func float32Item(x []float64) []byte {
	v := make([]float32, len(x))
	for i, f := range x {
		v[i] = float32(f)
	}
	return rpc.AppendFloat32s(nil, v)
}

// predictAll sends every row in batches of 32 and returns the outputs.
func predictAll(t *testing.T, c *rpc.Client, it rpc.InputType, rows [][]float64, enc func([]float64) []byte) []rpc.Output {
	t.Helper()
	var outs []rpc.Output
	for start := 0; start < len(rows); start += 32 {
		end := min(start+32, len(rows))
		batch := make([][]byte, 0, end-start)
		for _, r := range rows[start:end] {
			batch = append(batch, enc(r))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		o, err := c.Predict(ctx, it, batch)
		cancel()
		if err != nil {
			t.Fatalf("rows %d..%d: %v", start, end, err)
		}
		outs = append(outs, o...)
	}
	return outs
}

func TestSklearnServesEveryHeldOutDigit(t *testing.T) {
	d := trainDigits(t)
	for _, kind := range []string{"logreg", "knn", "tree"} {
		t.Run(kind, func(t *testing.T) {
			p := testutil.StartModel(t, []string{testutil.Python, filepath.Join(testutil.RepoRoot(t), "examples", "sklearn", "serve.py"),
				"--model", filepath.Join(d.dir, "sklearn_"+kind+".joblib")})
			outs := predictAll(t, p.Client(t), rpc.Float64, d.X, float64Item)
			want := d.Sklearn[kind]
			for i, o := range outs {
				var got int
				if o.Err != "" || json.Unmarshal(o.Data, &got) != nil || got != want[i] {
					t.Fatalf("row %d: got %q (err %q), want %d", i, o.Data, o.Err, want[i])
				}
			}
			t.Logf("%d held-out digits, every prediction equals estimator.predict", len(outs))
		})
	}
}

func TestSklearnPredictProba(t *testing.T) {
	d := trainDigits(t)
	p := testutil.StartModel(t, []string{testutil.Python, filepath.Join(testutil.RepoRoot(t), "examples", "sklearn", "serve.py"),
		"--model", filepath.Join(d.dir, "sklearn_logreg.joblib"), "--method", "predict_proba"})
	outs := predictAll(t, p.Client(t), rpc.Float64, d.X, float64Item)
	for i, o := range outs {
		var got []float64
		if err := json.Unmarshal(o.Data, &got); err != nil || len(got) != 10 {
			t.Fatalf("row %d: %q %v", i, o.Data, err)
		}
		for j := range got {
			if math.Abs(got[j]-d.Proba[i][j]) > 1e-12 {
				t.Fatalf("row %d class %d: %v, want %v", i, j, got[j], d.Proba[i][j])
			}
		}
	}
}

// checkClose compares vector outputs with the torch reference.
func checkClose(t *testing.T, outs []rpc.Output, want [][]float64, tol float64) {
	t.Helper()
	worst := 0.0
	for i, o := range outs {
		var got []float64
		if o.Err != "" || json.Unmarshal(o.Data, &got) != nil || len(got) != len(want[i]) {
			t.Fatalf("row %d: %q (err %q)", i, o.Data, o.Err)
		}
		for j := range got {
			worst = max(worst, math.Abs(got[j]-want[i][j]))
		}
	}
	if worst > tol {
		t.Fatalf("largest difference from PyTorch %g > %g", worst, tol)
	}
	t.Logf("%d rows, largest difference from PyTorch %g", len(outs), worst)
}

func TestTorchScriptMLP(t *testing.T) {
	d := trainDigits(t)
	p := testutil.StartModel(t, []string{testutil.Python, filepath.Join(testutil.RepoRoot(t), "examples", "pytorch", "serve.py"),
		"--model", filepath.Join(d.dir, "mlp.pt")})
	checkClose(t, predictAll(t, p.Client(t), rpc.Float32, d.X, float32Item), d.Torch, 1e-5)
}

func TestONNXMLPInGo(t *testing.T) {
	d := trainDigits(t)
	bin := testutil.BuildGo(t, "./examples/onnx")
	p := testutil.StartModel(t, []string{bin, "--model", filepath.Join(d.dir, "mlp.onnx")})
	checkClose(t, predictAll(t, p.Client(t), rpc.Float32, d.X, float32Item), d.Torch, 1e-4)
}

func TestNoopAndCostmodel(t *testing.T) {
	noop := testutil.StartModel(t, []string{testutil.BuildGo(t, "./examples/noop")})
	cost := testutil.StartModel(t, []string{testutil.BuildGo(t, "./examples/costmodel"), "--a", "1ms", "--b", "100us"})
	in := [][]byte{float32Item([]float64{1, 2}), float32Item([]float64{3})}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	outs, err := noop.Client(t).Predict(ctx, rpc.Bytes, in)
	if err != nil || string(outs[1].Data) != string(in[1]) {
		t.Fatalf("noop: %v %q", err, outs)
	}
	outs, err = cost.Client(t).Predict(ctx, rpc.Float32, in)
	if err != nil || string(outs[0].Data) != "1" {
		t.Fatalf("costmodel: %v %q", err, outs)
	}
}
