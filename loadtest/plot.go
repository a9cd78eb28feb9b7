package loadtest

import (
	"fmt"
	"image/color"
	"io"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WritePNG draws the run second by second, by when requests left: the p50
// and p99 latency against the SLO above, the offered rate, the answers
// from the prediction cache and the shed, default and error counts in the
// middle, the proxy's mean batch size below it and, when the proxy reports
// them, its desired and ready replicas at the bottom. It uses gonum/plot.
func (r *Result) WritePNG(w io.Writer, title string) error {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	n := len(r.Seconds)
	p50, p99, slo := make(plotter.XYs, n), make(plotter.XYs, n), make(plotter.XYs, n)
	sent, cached, unanswered := make(plotter.XYs, n), make(plotter.XYs, n), make(plotter.XYs, n)
	batch := make(plotter.XYs, n)
	desired, ready := make(plotter.XYs, n), make(plotter.XYs, n)
	replicas := false
	for i, s := range r.Seconds {
		desired[i] = plotter.XY{X: float64(s.T), Y: s.Replicas}
		ready[i] = plotter.XY{X: float64(s.T), Y: s.Ready}
		replicas = replicas || s.Replicas > 0
		x := float64(s.T)
		p50[i] = plotter.XY{X: x, Y: ms(s.P50)}
		p99[i] = plotter.XY{X: x, Y: ms(s.P99)}
		slo[i] = plotter.XY{X: x, Y: ms(r.SLO)}
		sent[i] = plotter.XY{X: x, Y: float64(s.Sent)}
		cached[i] = plotter.XY{X: x, Y: float64(s.Cache)}
		unanswered[i] = plotter.XY{X: x, Y: float64(s.Shed + s.Default + s.Errors)}
		batch[i] = plotter.XY{X: x, Y: s.MeanBatch}
	}
	blue := color.RGBA{R: 31, G: 119, B: 180, A: 255}
	orange := color.RGBA{R: 255, G: 127, B: 14, A: 255}
	red := color.RGBA{R: 214, G: 39, B: 40, A: 255}
	gray := color.RGBA{R: 120, G: 120, B: 120, A: 255}

	top := plot.New()
	top.Title.Text = title
	top.Y.Label.Text = "latency (ms)"
	top.Y.Min = 0
	top.Legend.Top = true
	if err := addLines(top, []series{{"p50", p50, blue, false}, {"p99", p99, orange, false}, {"SLO", slo, red, true}}); err != nil {
		return err
	}
	mid := plot.New()
	mid.Y.Label.Text = "requests / s"
	mid.Y.Min = 0
	mid.Legend.Top = true
	if err := addLines(mid, []series{{"sent", sent, gray, false}, {"from the cache", cached, blue, true}, {"shed, default or error", unanswered, red, false}}); err != nil {
		return err
	}
	batches := plot.New()
	batches.Y.Label.Text = "mean batch size"
	batches.Y.Min = 0
	if err := addLines(batches, []series{{"batch", batch, blue, false}}); err != nil {
		return err
	}
	plots := [][]*plot.Plot{{top}, {mid}, {batches}}
	if replicas {
		reps := plot.New()
		reps.Y.Label.Text = "replicas"
		reps.Y.Min = 0
		reps.Legend.Top = true
		if err := addLines(reps, []series{{"desired", desired, gray, false}, {"ready", ready, blue, true}}); err != nil {
			return err
		}
		plots = append(plots, []*plot.Plot{reps})
	}
	plots[len(plots)-1][0].X.Label.Text = "seconds"

	img := vgimg.New(vg.Points(720), vg.Points(240*float64(len(plots))))
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12)}
	canvases := plot.Align(plots, tiles, draw.New(img))
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	return nil
}

type series struct {
	name   string
	xys    plotter.XYs
	color  color.Color
	dashed bool
}

func addLines(p *plot.Plot, ss []series) error {
	for _, s := range ss {
		l, err := plotter.NewLine(s.xys)
		if err != nil {
			return fmt.Errorf("plot %s: %w", s.name, err)
		}
		l.Color = s.color
		l.Width = vg.Points(1.5)
		if s.dashed {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	p.Add(plotter.NewGrid())
	return nil
}
