package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"slices"
	"strings"
)

var (
	white     = color.RGBA{255, 255, 255, 255}
	black     = color.RGBA{0, 0, 0, 255}
	gridGray  = color.RGBA{220, 220, 220, 255}
	textGray  = color.RGBA{90, 90, 90, 255}
	barColors = map[string]color.RGBA{
		"ref":    {128, 128, 128, 255},
		"exec":   {52, 101, 164, 255},
		"pool":   {230, 126, 34, 255},
		"plugin": {115, 170, 60, 255},
	}
)

const (
	plotW, plotH = 1400, 960
	marginL      = 110
	marginR      = 30
	scale        = 2 // of the 5×7 font
)

// panel is one bar chart: a value per agent and server, log scale.
type panel struct {
	title string
	unit  string
	value func(r *Row) float64
}

// writePlot draws req/s and CPU per request at concurrency 4 (or the
// nearest measured) as grouped bars per agent and server.
func writePlot(path string, r *Results) error {
	c := plotConcurrency(r.Concurrency)
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	fill(img, 0, 0, plotW, plotH, white)
	commit := r.Commit
	if r.Uncommitted > 0 {
		commit += " + uncommitted changes"
	}
	title := fmt.Sprintf("agent-host bench, concurrency %d: commit %s, %d CPUs, %s, %s", c, commit, r.CPUs, r.Platform, r.Date)
	drawText(img, marginL, 16, title, scale, black)
	// Legend.
	x := marginL
	for _, s := range r.Servers {
		fill(img, x, 50, 22, 14, barColors[s.Key])
		drawText(img, x+30, 50, s.Label, scale, black)
		x += 30 + textWidth(s.Label, scale) + 40
	}

	var agents []benchAgent
	for _, a := range r.Agents {
		if a.Pending == "" {
			agents = append(agents, a)
		}
	}
	panels := []panel{
		{"Requests per second (log scale, higher is better)", "req/s", func(row *Row) float64 { return row.PerSecond }},
		{"CPU ms per request, server + its agents (log scale, lower is better)", "ms", func(row *Row) float64 {
			h, a := row.cpuPerRequest()
			return h + a
		}},
	}
	top := 90
	height := (plotH - top) / len(panels)
	for i, p := range panels {
		drawPanel(img, r, agents, c, p, top+i*height, height)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func plotConcurrency(cs []int) int {
	if slices.Contains(cs, 4) || len(cs) == 0 {
		return 4
	}
	return cs[0]
}

// drawPanel draws p in the band from y0, h pixels high.
func drawPanel(img *image.RGBA, r *Results, agents []benchAgent, c int, p panel, y0, h int) {
	drawText(img, marginL, y0+10, p.title, scale, black)
	plotTop, plotBottom := y0+50, y0+h-70
	left, right := marginL, plotW-marginR

	// The log axis spans whole decades around every value.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, a := range agents {
		for _, s := range r.Servers {
			if row := r.find(a.Label, s.Key, c); row != nil {
				if v := p.value(row); v > 0 {
					lo, hi = math.Min(lo, v), math.Max(hi, v)
				}
			}
		}
	}
	if math.IsInf(lo, 1) {
		drawText(img, left, plotTop, "no data", scale, textGray)
		return
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	yOf := func(v float64) int {
		f := (math.Log10(v) - dlo) / (dhi - dlo)
		return plotBottom - int(f*float64(plotBottom-plotTop))
	}
	for d := dlo; d <= dhi; d++ {
		y := yOf(math.Pow(10, d))
		fill(img, left, y, right-left, 1, gridGray)
		label := decade(d)
		drawText(img, left-12-textWidth(label, scale), y-glyphH*scale/2, label, scale, black)
	}
	fill(img, left, plotTop, 2, plotBottom-plotTop+1, black)
	fill(img, left, plotBottom, right-left, 2, black)

	groupW := (right - left) / len(agents)
	barW := groupW * 8 / 10 / len(r.Servers)
	for gi, a := range agents {
		gx := left + gi*groupW + groupW/10
		for si, s := range r.Servers {
			bx := gx + si*barW
			row := r.find(a.Label, s.Key, c)
			if row == nil || p.value(row) <= 0 {
				drawText(img, bx+(barW-textWidth("n/a", scale))/2, plotBottom-20, "n/a", scale, textGray)
				continue
			}
			v := p.value(row)
			y := yOf(v)
			fill(img, bx+2, y, barW-4, plotBottom-y, barColors[s.Key])
			label := num(v)
			drawText(img, bx+(barW-textWidth(label, scale))/2, y-glyphH*scale-6, label, scale, black)
		}
		name := a.Label
		// A qualified label too wide for its group loses its qualifier
		// (the line under it says what runs it).
		if i := strings.Index(name, " ("); i > 0 && textWidth(name, scale) > groupW-8 {
			name = name[:i]
		}
		drawText(img, left+gi*groupW+(groupW-textWidth(name, scale))/2, plotBottom+12, name, scale, black)
		sub := a.Short
		if n := groupW/(glyphA*scale) - 1; len(sub) > n {
			sub = sub[:n]
		}
		drawText(img, left+gi*groupW+(groupW-textWidth(sub, scale))/2, plotBottom+36, sub, scale, textGray)
	}
}

func decade(d float64) string {
	v := math.Pow(10, d)
	if d >= 0 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.*f", int(-d), v)
}
