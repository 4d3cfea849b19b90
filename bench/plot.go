package main

// Plots (PNG, gonum.org/v1/plot): throughput vs loss per path, latency
// percentiles vs loss, memory vs idle connections, and the loopback
// throughput as bars.

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

func (rs *results) plots(dir string) error {
	if rs.machine("lossy") != nil && len(rs.links("lossy")) > 0 {
		for _, conns := range []int{1, 8} {
			if err := rs.plotLossyThroughput(filepath.Join(dir, fmt.Sprintf("lossy-throughput-%d.png", conns)), conns); err != nil {
				return err
			}
		}
		if err := rs.plotLossyLatency(filepath.Join(dir, "lossy-latency.png")); err != nil {
			return err
		}
	}
	if r := rs.pacingRecord("step"); r != nil {
		if err := plotPacingStep(filepath.Join(dir, "pacing-step.png"), r); err != nil {
			return err
		}
	}
	if rs.machine("loopback") != nil {
		if len(rs.memCounts()) > 0 {
			if err := rs.plotMemory(filepath.Join(dir, "memory.png")); err != nil {
				return err
			}
		}
		if err := rs.plotLoopbackThroughput(filepath.Join(dir, "loopback-throughput.png")); err != nil {
			return err
		}
	}
	return nil
}

// style gives each path a fixed colour and each congestion control a dash.
func style(path, cc string) (color.Color, []vg.Length) {
	idx := map[string]int{"kcp": 0, "kcp-fec": 1, "tcp": 2, "direct": 3, "tcpbench": 4, "tcp-plain": 5, "kcp-plain": 6, "tcp-x4": 7,
		"kcp-fixed": 8, "kcp-unpaced": 9}[path]
	var dash []vg.Length
	if cc == "cubic" {
		dash = []vg.Length{vg.Points(5), vg.Points(3)}
	}
	return plotutil.Color(idx), dash
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

func addLine(p *plot.Plot, label string, xys plotter.XYs, c color.Color, dash []vg.Length) error {
	if len(xys) == 0 {
		return nil
	}
	l, s, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	l.Color, l.Dashes, l.Width = c, dash, vg.Points(1.5)
	s.Color, s.Shape = c, draw.CircleGlyph{}
	p.Add(l, s)
	p.Legend.Add(label, l, s)
	return nil
}

// lossSeries returns (loss, value) for one path over the links with (or
// without) burst loss, skipping missing points.
func (rs *results) lossSeries(burst bool, path, cc string, value func(l *LinkSpec) (float64, bool)) plotter.XYs {
	var xys plotter.XYs
	for _, l := range rs.links("lossy") {
		if (l.Burst > 0) != burst {
			continue
		}
		if !burst || l.LossPct > 0 {
			if v, ok := value(&l); ok && !math.IsNaN(v) {
				xys = append(xys, plotter.XY{X: l.LossPct, Y: v})
			}
		}
	}
	if burst { // the loss-free point belongs on both
		for _, l := range rs.links("lossy") {
			if l.LossPct == 0 {
				if v, ok := value(&l); ok {
					xys = append(plotter.XYs{{X: 0, Y: v}}, xys...)
				}
				break
			}
		}
	}
	return xys
}

func saveTiles(file string, plots [][]*plot.Plot, w, h vg.Length) error {
	img := vgimg.New(w, h)
	dc := draw.New(img)
	t := draw.Tiles{Rows: len(plots), Cols: len(plots[0]), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	cs := plot.Align(plots, t, dc)
	for i := range plots {
		for j := range plots[i] {
			if plots[i][j] != nil {
				plots[i][j].Draw(cs[i][j])
			}
		}
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	fmt.Fprintln(os.Stderr, "bench: wrote", file)
	return f.Close()
}

func msTicks() []plot.Tick {
	var ts []plot.Tick
	for _, v := range []float64{20, 50, 100, 150, 200, 500, 1000, 2000, 5000} {
		ts = append(ts, plot.Tick{Value: v, Label: fmt.Sprint(v)})
	}
	return ts
}

// lossAxis sets the x axis to the loss rates measured.
func (rs *results) lossAxis(p *plot.Plot) {
	hi := 0.0
	var ts []plot.Tick
	for _, l := range rs.links("lossy") {
		hi = max(hi, l.LossPct)
		if !slices.ContainsFunc(ts, func(t plot.Tick) bool { return t.Value == l.LossPct }) {
			ts = append(ts, plot.Tick{Value: l.LossPct, Label: fmt.Sprint(l.LossPct)})
		}
	}
	if !slices.ContainsFunc(ts, func(t plot.Tick) bool { return t.Value == 0 }) {
		ts = append(ts, plot.Tick{Value: 0, Label: "0"})
	}
	p.X.Min, p.X.Max = 0, hi+0.3
	p.X.Tick.Marker = plot.ConstantTicks(ts)
}

// lossKinds is [false] (random loss only) or [false, true] when some links
// had burst loss.
func (rs *results) lossKinds() []bool {
	for _, l := range rs.links("lossy") {
		if l.Burst > 0 {
			return []bool{false, true}
		}
	}
	return []bool{false}
}

func (rs *results) rttRate() (float64, float64) {
	for _, l := range rs.links("lossy") {
		return l.RTTms, l.RateMbit
	}
	return 0, 0
}

func (rs *results) plotLossyThroughput(file string, conns int) error {
	rtt, rate := rs.rttRate()
	var plots [][]*plot.Plot
	for _, burst := range rs.lossKinds() {
		var row []*plot.Plot
		for _, dir := range []string{"up", "down"} {
			kind := "random loss"
			if burst {
				kind = "burst loss"
			}
			p := newPlot(fmt.Sprintf("%s, %d conn., %s (RTT %g ms, %g Mbit/s)", dir, conns, kind, rtt, rate), "loss (%)", "goodput (Mbit/s)")
			p.Y.Min, p.Y.Max = 0, rate*1.6 // room for the legend
			rs.lossAxis(p)
			for _, pc := range rs.paths("lossy") {
				xys := rs.lossSeries(burst, pc[0], pc[1], func(l *LinkSpec) (float64, bool) {
					r := rs.find(l, pc[0], pc[1], "throughput", dir, conns)
					return mbit(r), r != nil
				})
				c, d := style(pc[0], pc[1])
				if err := addLine(p, pathLabel(pc[0], pc[1]), xys, c, d); err != nil {
					return err
				}
			}
			row = append(row, p)
		}
		plots = append(plots, row)
	}
	return saveTiles(file, plots, 28*vg.Centimeter, 22*vg.Centimeter)
}

func (rs *results) plotLossyLatency(file string) error {
	rtt, _ := rs.rttRate()
	var plots [][]*plot.Plot
	for _, burst := range rs.lossKinds() {
		var row []*plot.Plot
		for _, q := range []struct {
			name string
			f    func(*Summary) float64
		}{{"p50", p50}, {"p99", p99}, {"p99.9", p999}} {
			kind := "random loss"
			if burst {
				kind = "burst loss"
			}
			p := newPlot(fmt.Sprintf("echo %s, 1 conn., %s", q.name, kind), "loss (%)", "ms (log)")
			p.Y.Scale = plot.LogScale{}
			p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
			p.Y.Min, p.Y.Max = 20, 5000
			p.Y.Tick.Marker = plot.ConstantTicks(msTicks())
			p.Legend.Top = false
			rs.lossAxis(p)
			for _, pc := range rs.paths("lossy") {
				if pc[0] == "tcpbench" {
					continue
				}
				xys := rs.lossSeries(burst, pc[0], pc[1], func(l *LinkSpec) (float64, bool) {
					v := latField(rs.find(l, pc[0], pc[1], "latency", "", 1), q.f, 1e-3)
					return v, !math.IsNaN(v) && v > 0
				})
				c, d := style(pc[0], pc[1])
				if err := addLine(p, pathLabel(pc[0], pc[1]), xys, c, d); err != nil {
					return err
				}
			}
			if q.name == "p99" && rtt > 0 {
				tl, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 3 * rtt}, {X: 5, Y: 3 * rtt}})
				if err != nil {
					return err
				}
				tl.Color, tl.Dashes = color.Gray{Y: 100}, []vg.Length{vg.Points(2), vg.Points(2)}
				p.Add(tl)
				p.Legend.Add("target 3× RTT", tl)
			}
			row = append(row, p)
		}
		plots = append(plots, row)
	}
	return saveTiles(file, plots, 36*vg.Centimeter, 22*vg.Centimeter)
}

func (rs *results) plotMemory(file string) error {
	p := newPlot("warren server + client RSS vs idle public connections (loopback)", "idle public connections", "RSS, server + client (MiB)")
	p.Legend.Left = true
	p.Y.Min = 0
	var idle float64
	for _, pc := range rs.paths("loopback") {
		if pc[0] == "direct" {
			continue
		}
		var xys plotter.XYs
		if r := rs.find(nil, pc[0], "", "memory", "", 0); r != nil && r.Mem != nil {
			xys = append(xys, plotter.XY{X: 0, Y: mib(r.Mem.ServerRSS + r.Mem.ClientRSS)})
			if pc[0] == "tcp" {
				idle = mib(r.Mem.ServerRSS + r.Mem.ClientRSS)
			}
		}
		for _, n := range rs.memCounts() {
			if r := rs.find(nil, pc[0], "", "memory", "", n); r != nil && r.Mem != nil {
				xys = append(xys, plotter.XY{X: float64(n), Y: mib(r.Mem.ServerRSS + r.Mem.ClientRSS)})
			}
		}
		c, d := style(pc[0], "")
		if err := addLine(p, pc[0], xys, c, d); err != nil {
			return err
		}
	}
	if ns := rs.memCounts(); len(ns) > 0 {
		n := float64(ns[len(ns)-1])
		tl, err := plotter.NewLine(plotter.XYs{{X: 0, Y: idle}, {X: n, Y: idle + n*20/1024}})
		if err != nil {
			return err
		}
		tl.Color, tl.Dashes = color.Gray{Y: 100}, []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(tl)
		p.Legend.Add("target: tcp idle + 20 KiB/conn.", tl)
	}
	return saveTiles(file, [][]*plot.Plot{{p}}, 20*vg.Centimeter, 13*vg.Centimeter)
}

func (rs *results) plotLoopbackThroughput(file string) error {
	var paths []string
	for _, pc := range rs.paths("loopback") {
		paths = append(paths, pc[0])
	}
	p := newPlot("loopback bulk throughput (every byte verified)", "", "MB/s")
	cases := []struct {
		dir   string
		conns int
	}{{"up", 1}, {"down", 1}, {"up", 8}, {"down", 8}}
	w := vg.Points(10)
	for i, path := range paths {
		var vals plotter.Values
		for _, c := range cases {
			v := mbps(rs.find(nil, path, "", "throughput", c.dir, c.conns))
			if math.IsNaN(v) {
				v = 0
			}
			vals = append(vals, v)
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		c, _ := style(path, "")
		bars.Color = c
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(float64(i)-float64(len(paths)-1)/2)
		p.Add(bars)
		p.Legend.Add(path, bars)
	}
	var names []string
	for _, c := range cases {
		names = append(names, fmt.Sprintf("%s, %d conn.", c.dir, c.conns))
	}
	p.NominalX(names...)
	p.Y.Min = 0
	return saveTiles(file, [][]*plot.Plot{{p}}, 20*vg.Centimeter, 12*vg.Centimeter)
}
