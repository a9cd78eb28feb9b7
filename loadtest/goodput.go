package loadtest

import (
	"cmp"
	"fmt"
	"image/color"
	"io"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Goodput is what a run offered and what it got in time, per second of
// the measured schedule: requests sent, and answers a model gave within
// the SLO (computed or from the prediction cache).
func (r *Result) Goodput() (offered, inTime float64) {
	s := r.Duration.Seconds()
	if s <= 0 {
		return 0, 0
	}
	return float64(r.Sent) / s, r.ModelAttainment * float64(r.Sent) / s
}

// GoodputCurve is one configuration's goodput (a controller's) at the
// offered rates it was run at.
type GoodputCurve struct {
	Name string
	Runs []*Result
}

// WriteGoodputPNG draws one line per curve, answers in time per second
// against the offered rate, through the mean of the runs at each rate
// (each run a point), with bound, where positive, and 0.9 × bound dashed:
// past capacity the line should plateau near the bound, never dip.
func WriteGoodputPNG(w io.Writer, title string, bound float64, curves []GoodputCurve) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "offered (requests / s)"
	p.Y.Label.Text = "answered by a model within the SLO (/ s)"
	p.X.Min, p.Y.Min = 0, 0
	p.Legend.Top, p.Legend.Left = false, false // lower right: the lines plateau above it
	palette := []color.Color{
		color.RGBA{R: 31, G: 119, B: 180, A: 255}, color.RGBA{R: 255, G: 127, B: 14, A: 255},
		color.RGBA{R: 44, G: 160, B: 44, A: 255}, color.RGBA{R: 148, G: 103, B: 189, A: 255},
	}
	var hi float64
	for i, c := range curves {
		points := make(plotter.XYs, 0, len(c.Runs))
		for _, r := range c.Runs {
			x, y := r.Goodput()
			points = append(points, plotter.XY{X: x, Y: y})
			hi = max(hi, x)
		}
		line := meanByRate(points)
		l, err := plotter.NewLine(line)
		if err != nil {
			return fmt.Errorf("plot %s: %w", c.Name, err)
		}
		s, err := plotter.NewScatter(points)
		if err != nil {
			return fmt.Errorf("plot %s: %w", c.Name, err)
		}
		l.Color, l.Width = palette[i%len(palette)], vg.Points(1.5)
		s.Color = l.Color
		p.Add(l, s)
		p.Legend.Add(c.Name, l)
	}
	if bound > 0 {
		for _, b := range []struct {
			name  string
			y     float64
			color color.Color
		}{{"bound", bound, color.RGBA{R: 214, G: 39, B: 40, A: 255}}, {"0.9 × bound", 0.9 * bound, color.RGBA{R: 120, G: 120, B: 120, A: 255}}} {
			l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: b.y}, {X: max(hi, bound), Y: b.y}})
			if err != nil {
				return fmt.Errorf("plot %s: %w", b.name, err)
			}
			l.Color, l.Dashes = b.color, []vg.Length{vg.Points(4), vg.Points(3)}
			p.Add(l)
			p.Legend.Add(b.name, l)
		}
	}
	p.Add(plotter.NewGrid())
	img := vgimg.New(vg.Points(720), vg.Points(480))
	p.Draw(draw.New(img))
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	return nil
}

// meanByRate is points sorted by offered rate with the runs at one rate
// (within 1%: a Poisson schedule sends a few more or less) averaged.
func meanByRate(points plotter.XYs) plotter.XYs {
	sorted := slices.SortedFunc(slices.Values(points), func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
	var out plotter.XYs
	for i := 0; i < len(sorted); {
		j, sx, sy := i, 0.0, 0.0
		for ; j < len(sorted) && sorted[j].X <= sorted[i].X*1.01; j++ {
			sx, sy = sx+sorted[j].X, sy+sorted[j].Y
		}
		k := float64(j - i)
		out = append(out, plotter.XY{X: sx / k, Y: sy / k})
		i = j
	}
	return out
}
