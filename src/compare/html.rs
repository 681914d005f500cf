//! The comparison as one self-contained HTML file (as layer reports are: inline SVG, no
//! scripts): count-vs-ε curves of every run overlaid, per-layer bars per run, intruders over
//! training steps, the tracked intruders and one matrix's heatmaps in every run side by side.

use std::fmt::Write;

use super::Comparison;
use crate::report::html::{
    escape, head, heatmap_svg_titled, int_ticks, layer_ticks, nice_axis, Frame,
};
use crate::report::model::intruder_summary;
use crate::spectral::rule::SWEEP;

/// Okabe–Ito: told apart with the common colour-vision deficiencies; grey for their black,
/// which a dark page would hide.
const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999999",
];

/// A line of a plot: its colour's index, its label, its points.
type Series<'a> = (usize, &'a str, Vec<(f64, f64)>);

/// Run `i`'s colour, and past eight runs a dash pattern too.
fn style(i: usize) -> (&'static str, &'static str) {
    let dash = ["", "6 3", "2 2", "8 3 2 3"][(i / PALETTE.len()) % 4];
    (PALETTE[i % PALETTE.len()], dash)
}

fn legend(s: &mut String, f: &Frame, labels: &[(usize, &str)]) {
    for (row, (i, label)) in labels.iter().enumerate() {
        let (color, dash) = style(*i);
        let y = f.top + 6.0 + 13.0 * row as f64;
        // In the right margin, clear of the data.
        let x = f.w - f.right + 10.0;
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2.5" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 18.0,
            x + 22.0,
            y + 4.0,
            escape(&crate::report::shown_name(label, Some(22)))
        );
    }
}

/// One line per series over a numeric x axis; points get a tooltip.
#[allow(clippy::too_many_arguments)]
fn lines_svg(
    title: &str,
    xlabel: &str,
    series: &[Series],
    x: (f64, f64),
    xt: Vec<(f64, String)>,
    marker: Option<f64>,
) -> String {
    let ymax = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (step, ymax) = nice_axis(ymax);
    let f = Frame {
        w: 560.0,
        h: (70.0 + 13.0 * series.len() as f64).max(260.0),
        left: 46.0,
        right: 160.0,
        top: 24.0,
        bottom: 40.0,
        x,
        y: (0.0, ymax),
    };
    let mut s = String::new();
    f.open(&mut s, title);
    let _ = write!(
        s,
        r#"<text x="{}" y="14" font-weight="bold">{}</text>"#,
        f.left,
        escape(title)
    );
    if let Some(m) = marker {
        let px = f.px(m);
        let _ = write!(
            s,
            r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="currentColor" stroke-opacity="0.5" stroke-dasharray="4 3"/>"#,
            f.py(0.0),
            f.py(ymax)
        );
    }
    let n = series.len();
    for (order, (i, label, pts)) in series.iter().enumerate() {
        let (color, dash) = style(*i);
        // Earlier lines wider, so a run whose curve equals a later one's still shows.
        let width = 2.0 + 2.0 * (n - 1 - order) as f64;
        let p: Vec<String> = pts
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", f.px(*a), f.py(*b)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}" stroke-opacity="0.9" stroke-dasharray="{dash}"/>"#,
            p.join(" ")
        );
        for (a, b) in pts {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"><title>{}: {a} → {b}</title></circle>"#,
                f.px(*a),
                f.py(*b),
                escape(label)
            );
        }
    }
    let labels: Vec<(usize, &str)> = series.iter().map(|(i, l, _)| (*i, *l)).collect();
    legend(&mut s, &f, &labels);
    f.axes(&mut s, &xt, &int_ticks(step, ymax), xlabel, "intruders");
    s.push_str("</svg>");
    s
}

impl Comparison {
    /// Count vs ε, one curve per run that could be scanned.
    fn sweep_svg(&self) -> String {
        let series: Vec<Series> = self
            .runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let res = r.results.as_ref().ok()?;
                Some((
                    i,
                    r.spec.label.as_str(),
                    res.sweep.iter().map(|(e, n)| (*e, *n as f64)).collect(),
                ))
            })
            .collect();
        let xt = (0..=5)
            .map(|i| (i as f64 / 5.0, format!("{:.1}", i as f64 / 5.0)))
            .collect();
        lines_svg(
            &format!("Intruders vs ε (k = {})", self.rule.k()),
            "ε",
            &series,
            (0.0, 1.0),
            xt,
            Some(self.rule.epsilon()),
        )
    }

    /// Intruders at ε over training steps, one line per training run; None unless some runs
    /// carry steps.
    fn steps_svg(&self) -> Option<String> {
        let mut groups: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in &self.runs {
            let (Some(step), Ok(res)) = (r.spec.step, &r.results) else {
                continue;
            };
            let g = r.spec.group.clone().unwrap_or_default();
            let point = (step as f64, res.total_rule as f64);
            match groups.iter_mut().find(|(name, _)| *name == g) {
                Some((_, pts)) => pts.push(point),
                None => groups.push((g, vec![point])),
            }
        }
        if groups.iter().all(|(_, p)| p.len() < 2) {
            return None;
        }
        for (_, p) in &mut groups {
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let xmax = groups
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let (xs, xmax) = nice_axis(xmax);
        let series: Vec<Series> = groups
            .iter()
            .enumerate()
            .map(|(n, (g, p))| (n, if g.is_empty() { "runs" } else { g }, p.clone()))
            .collect();
        Some(lines_svg(
            &format!("Intruders over training (ε = {})", self.rule.epsilon()),
            "step",
            &series,
            (0.0, xmax),
            int_ticks(xs, xmax),
            None,
        ))
    }

    /// Per layer, one bar per run.
    fn layers_svg(&self) -> Option<String> {
        let layers = self.layers();
        if layers.is_empty() {
            return None;
        }
        let count = |r: &super::RunResult, l: &str| r.layer_count(l).unwrap_or(0);
        let ymax = layers
            .iter()
            .flat_map(|l| self.runs.iter().map(move |r| count(r, l)))
            .max()
            .unwrap_or(0);
        let (step, ymax) = nice_axis(ymax as f64);
        let nr = self.runs.len();
        let group_w = (5.0 * nr as f64 + 8.0).max(24.0);
        let f = Frame {
            w: (60.0 + group_w * layers.len() as f64 + 160.0).max(420.0),
            h: (70.0 + 13.0 * nr as f64).max(240.0),
            left: 46.0,
            right: 160.0,
            top: 24.0,
            bottom: 44.0,
            x: (0.0, layers.len() as f64),
            y: (0.0, ymax),
        };
        let mut s = String::new();
        let title = format!(
            "Intruders per layer (k = {}, ε = {})",
            self.rule.k(),
            self.rule.epsilon()
        );
        f.open(&mut s, &title);
        let _ = write!(
            s,
            r#"<text x="{}" y="14" font-weight="bold">{}</text>"#,
            f.left,
            escape(&title)
        );
        let slot = (f.px(1.0) - f.px(0.0)) * 0.85 / nr as f64;
        for (li, l) in layers.iter().enumerate() {
            let x0 = f.px(li as f64 + 0.075);
            for (ri, r) in self.runs.iter().enumerate() {
                let n = count(r, l);
                let y = f.py(n as f64);
                let _ = write!(
                    s,
                    r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} · {}: {n}</title></rect>"#,
                    x0 + slot * ri as f64,
                    (slot - 0.5).max(0.5),
                    f.py(0.0) - y,
                    style(ri).0,
                    escape(&r.spec.label),
                    escape(l)
                );
            }
        }
        let xt = layer_ticks(layers.iter().map(String::as_str));
        let labels: Vec<(usize, &str)> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.spec.label.as_str()))
            .collect();
        legend(&mut s, &f, &labels);
        f.axes(
            &mut s,
            &xt,
            &int_ticks(step, ymax),
            "layer (block index)",
            "intruders",
        );
        s.push_str("</svg>");
        Some(s)
    }

    /// The whole comparison as one HTML page, made at `time`.
    pub fn html(&self, time: &str) -> String {
        let (k, eps) = (self.rule.k(), self.rule.epsilon());
        let mut s = head(
            "lorascope comparison",
            "td:nth-child(2){text-align:left}.sw{display:inline-block;width:.8em;height:.8em;margin-right:.3em;border-radius:2px}.held{font-weight:bold}",
        );
        let _ = write!(
            s,
            "<h1>lorascope comparison</h1><p class=muted>lorascope {} · {} · k = {k} · ε = {eps} · {}</p>",
            env!("CARGO_PKG_VERSION"),
            escape(time),
            crate::report::count(self.runs.len(), "run", "runs"),
        );
        let metrics = self.metric_names();
        let steps = self.runs.iter().any(|r| r.spec.step.is_some());
        s.push_str("<h2>Runs</h2><table><tr><th>run</th><th>path</th>");
        if steps {
            s.push_str("<th>step</th><th>epoch</th>");
        }
        let _ = write!(s, "<th>intruders at ε = {eps}</th>");
        for m in &metrics {
            let _ = write!(s, "<th>{}</th>", escape(m));
        }
        s.push_str("</tr>");
        for (i, r) in self.runs.iter().enumerate() {
            let _ = write!(
                s,
                r#"<tr><td><span class=sw style="background:{}"></span>{}</td><td><code>{}</code></td>"#,
                style(i).0,
                escape(&r.spec.label),
                escape(&r.spec.path.display().to_string())
            );
            if steps {
                let _ = write!(
                    s,
                    "<td>{}</td><td>{}</td>",
                    r.spec.step.map_or("—".into(), |x| x.to_string()),
                    r.spec.epoch.map_or("—".into(), |x| format!("{x:.2}"))
                );
            }
            match &r.results {
                Ok(res) => {
                    let failed = res.failed().count();
                    let _ = write!(s, "<td class=intr>{}", res.total_rule);
                    if failed > 0 {
                        let _ = write!(
                            s,
                            " <span class=muted>({} could not be analysed)</span>",
                            crate::report::count(failed, "matrix", "matrices")
                        );
                    }
                    s.push_str("</td>");
                    for m in &metrics {
                        let _ = write!(
                            s,
                            "<td>{}</td>",
                            r.spec
                                .metrics
                                .get(m)
                                .map_or("—".into(), |x| format!("{x:.4}"))
                        );
                    }
                }
                Err(e) => {
                    let _ = write!(
                        s,
                        "<td class=intr colspan={}>could not be scanned: {}</td>",
                        1 + metrics.len(),
                        escape(e)
                    );
                }
            }
            s.push_str("</tr>");
        }
        s.push_str("</table>");
        let _ = write!(s, "<div class=plots>{}", self.sweep_svg());
        if let Some(svg) = self.steps_svg() {
            s.push_str(&svg);
        }
        s.push_str("</div><h2>Intruders vs ε</h2><table><tr><th>run</th>");
        for e in SWEEP {
            let _ = write!(s, "<th>{e:.1}</th>");
        }
        s.push_str("</tr>");
        for r in &self.runs {
            let _ = write!(s, "<tr><td>{}</td>", escape(&r.spec.label));
            match &r.results {
                Ok(res) => {
                    for (_, n) in &res.sweep {
                        let _ = write!(s, "<td>{n}</td>");
                    }
                }
                Err(_) => {
                    let _ = write!(s, "<td colspan={}>—</td>", SWEEP.len());
                }
            }
            s.push_str("</tr>");
        }
        s.push_str("</table>");
        if let Some(svg) = self.layers_svg() {
            let _ = write!(s, "<h2>Per layer</h2><div class=plots>{svg}</div>");
        }
        let corr = self.correlations();
        if !corr.is_empty() {
            let _ = write!(
                s,
                "<h2>Intruders and metrics</h2><p>Spearman ρ between each run's intruder count (ε = {eps}) and the metric, across runs.</p><table><tr><th>metric</th><th>ρ</th><th>runs</th></tr>"
            );
            for (m, rho, n) in &corr {
                let _ = write!(
                    s,
                    "<tr><td>{}</td><td>{rho:+.2}</td><td>{n}</td></tr>",
                    escape(m)
                );
            }
            s.push_str("</table>");
        }
        if !self.tracks.is_empty() {
            let reference = &self.runs[self.reference].spec.label;
            let _ = write!(
                s,
                "<h2>Intruders of {} through the runs</h2><p>Each cell: the best |cos| with the intruder among the run's top singular vectors of the matrix, that vector's rank and σ; bold where the run holds the direction (|cos| ≥ ε).</p><table><tr><th>matrix</th><th>j</th><th>σ</th>",
                escape(reference)
            );
            for r in &self.runs {
                let _ = write!(s, "<th>{}</th>", escape(&r.spec.label));
            }
            s.push_str("<th>held from</th></tr>");
            for t in &self.tracks {
                let _ = write!(
                    s,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{:.3}</td>",
                    escape(&t.matrix),
                    t.j,
                    t.sigma
                );
                for p in &t.points {
                    match p {
                        Some(p) => {
                            let _ = write!(
                                s,
                                "<td{}>{:.2} <span class=muted>(rank {}, σ {:.3})</span></td>",
                                if p.cos >= eps { " class=held" } else { "" },
                                p.cos,
                                p.rank,
                                p.sigma
                            );
                        }
                        None => s.push_str("<td>—</td>"),
                    }
                }
                let _ = write!(
                    s,
                    "<td>{}</td></tr>",
                    t.first_seen(eps)
                        .map_or("—".into(), |i| escape(&self.runs[i].spec.label))
                );
            }
            s.push_str("</table>");
        }
        for sec in &self.sections {
            let _ = write!(
                s,
                "<section><h2><code>{}</code> in every run</h2><div class=plots>",
                escape(&sec.matrix)
            );
            for (r, m) in self.runs.iter().zip(&sec.runs) {
                let svg = m.as_ref().and_then(|m| {
                    heatmap_svg_titled(
                        m,
                        &format!(
                            "{}: {}",
                            crate::report::shown_name(&r.spec.label, Some(28)),
                            intruder_summary(&m.intruders)
                        ),
                    )
                });
                match svg {
                    Some(svg) => s.push_str(&svg),
                    None => {
                        let _ = write!(
                            s,
                            "<p class=muted>{}: not analysed</p>",
                            escape(&r.spec.label)
                        );
                    }
                }
            }
            s.push_str("</div></section>");
        }
        s.push_str("</body></html>\n");
        s
    }
}
