package loadtest

import (
	"bytes"
	"testing"
	"time"

	"gonum.org/v1/plot/plotter"
)

func TestGoodput(t *testing.T) {
	r := &Result{Duration: 10 * time.Second, Sent: 5000, ModelAttainment: 0.9}
	if offered, inTime := r.Goodput(); offered != 500 || inTime != 450 {
		t.Errorf("Goodput() = %v, %v; want 500, 450", offered, inTime)
	}
	if offered, inTime := (&Result{}).Goodput(); offered != 0 || inTime != 0 {
		t.Errorf("an empty run's Goodput() = %v, %v; want 0, 0", offered, inTime)
	}
}

func TestMeanByRateAveragesTheRunsAtOneRate(t *testing.T) {
	got := meanByRate(plotter.XYs{{X: 1000, Y: 480}, {X: 500, Y: 490}, {X: 1004, Y: 460}, {X: 998, Y: 470}})
	want := plotter.XYs{{X: 500, Y: 490}, {X: 1000.6666666666666, Y: 470}}
	if len(got) != len(want) || got[0] != want[0] || got[1].Y != want[1].Y || got[1].X-want[1].X > 1e-9 {
		t.Errorf("meanByRate = %v, want %v", got, want)
	}
}

func TestWriteGoodputPNG(t *testing.T) {
	run := func(sent int, attained float64) *Result {
		return &Result{Duration: time.Second, Sent: sent, ModelAttainment: attained}
	}
	var b bytes.Buffer
	err := WriteGoodputPNG(&b, "test", 500, []GoodputCurve{
		{Name: "aimd", Runs: []*Result{run(250, 1), run(500, 0.95), run(1000, 0.47)}},
		{Name: "latency_model", Runs: []*Result{run(250, 1), run(1000, 0.48)}},
	})
	if err != nil || !bytes.HasPrefix(b.Bytes(), []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("WriteGoodputPNG: %v, %d bytes; want a PNG", err, b.Len())
	}
}
