//! One self-contained HTML file: inline CSS and SVG, no scripts, fonts or network. Axes and text
//! use `currentColor`, so the plots read in light and dark mode alike.

use std::fmt::Write;

use super::model::{MatrixRow, Report};
use super::text::{spark_range, sparkline};

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// viridis, as in the explorer.
pub(crate) fn viridis(v: f32) -> String {
    const R: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let t = v.clamp(0.0, 1.0) * 8.0;
    let i = (t.floor() as usize).min(7);
    let w = t - i as f32;
    let mix = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * w).round() as u8;
    let (a, b) = (R[i], R[i + 1]);
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

pub(crate) const INTRUDER: &str = "#e0443e";
const BASE: &str = "#4c78a8";
const TUNED: &str = "#2ca02c";

/// A plot frame: data coordinates to SVG pixels, with labelled axes.
pub(crate) struct Frame {
    pub w: f64,
    pub h: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub x: (f64, f64),
    pub y: (f64, f64),
}

impl Frame {
    pub fn px(&self, x: f64) -> f64 {
        self.left
            + (x - self.x.0) / (self.x.1 - self.x.0).max(1e-300) * (self.w - self.left - self.right)
    }
    pub fn py(&self, y: f64) -> f64 {
        self.h
            - self.bottom
            - (y - self.y.0) / (self.y.1 - self.y.0).max(1e-300) * (self.h - self.top - self.bottom)
    }
    pub fn open(&self, s: &mut String, title: &str) {
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11" fill="currentColor" role="img"><title>{t}</title>"#,
            w = self.w,
            h = self.h,
            t = escape(title)
        );
    }
    /// Axes with ticks: `xt`/`yt` are (value, label).
    pub fn axes(
        &self,
        s: &mut String,
        xt: &[(f64, String)],
        yt: &[(f64, String)],
        xl: &str,
        yl: &str,
    ) {
        let (x0, x1, y0, y1) = (
            self.left,
            self.w - self.right,
            self.h - self.bottom,
            self.top,
        );
        let _ = write!(
            s,
            r#"<g stroke="currentColor" stroke-width="1"><line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/></g>"#
        );
        for (v, l) in xt {
            let x = self.px(*v);
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{:.1}" stroke="currentColor"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                y0 + 4.0,
                y0 + 16.0,
                escape(l)
            );
        }
        for (v, l) in yt {
            let y = self.py(*v);
            let _ = write!(
                s,
                r#"<line x1="{:.1}" y1="{y:.1}" x2="{x0}" y2="{y:.1}" stroke="currentColor"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                x0 - 4.0,
                x0 - 6.0,
                y + 4.0,
                escape(l)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            self.h - 4.0,
            escape(xl)
        );
        let _ = write!(
            s,
            r#"<text transform="translate(12 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (y0 + y1) / 2.0,
            escape(yl)
        );
    }
}

/// A 1-2-5 tick step giving about four intervals up to `v`, and the axis maximum.
pub(crate) fn nice_axis(v: f64) -> (f64, f64) {
    let raw = (v / 4.0).max(1.0);
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= raw)
        .unwrap();
    (step, (v / step).ceil().max(1.0) * step)
}

pub(crate) fn int_ticks(step: f64, max: f64) -> Vec<(f64, String)> {
    let n = (max / step).round() as usize;
    (0..=n)
        .map(|i| i as f64 * step)
        .map(|v| (v, format!("{v}")))
        .collect()
}

/// Ticks under per-layer bars: each block's index (`…layer.3` → `3`), centred on its slot.
pub(crate) fn layer_ticks<'a>(blocks: impl Iterator<Item = &'a str>) -> Vec<(f64, String)> {
    blocks
        .enumerate()
        .map(|(i, b)| {
            (
                i as f64 + 0.5,
                b.rsplit('.').next().unwrap_or(b).to_string(),
            )
        })
        .collect()
}

pub fn per_layer_svg(r: &Report) -> String {
    let n = r.results.per_layer.len().max(1);
    let (step, ymax) = nice_axis(
        r.results
            .per_layer
            .iter()
            .map(|(_, c)| *c as f64)
            .fold(0.0, f64::max),
    );
    let f = Frame {
        w: (60.0 + 28.0 * n as f64).max(360.0),
        h: 220.0,
        left: 46.0,
        right: 10.0,
        top: 24.0,
        bottom: 44.0,
        x: (0.0, n as f64),
        y: (0.0, ymax),
    };
    let mut s = String::new();
    f.open(&mut s, "Intruders per layer");
    let _ = write!(
        s,
        r#"<text x="{}" y="14" font-weight="bold">Intruders per layer (k = {}, ε = {})</text>"#,
        f.left,
        r.results.k(),
        r.results.epsilon()
    );
    let bw = (f.px(1.0) - f.px(0.0)) * 0.7;
    for (i, (b, c)) in r.results.per_layer.iter().enumerate() {
        let x = f.px(i as f64 + 0.5) - bw / 2.0;
        let y = f.py(*c as f64);
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{:.1}" fill="{}"><title>{}: {c}</title></rect>"#,
            f.py(0.0) - y,
            if *c > 0 { INTRUDER } else { BASE },
            escape(b)
        );
    }
    let xt = layer_ticks(r.results.per_layer.iter().map(|(b, _)| b.as_str()));
    f.axes(
        &mut s,
        &xt,
        &int_ticks(step, ymax),
        "layer (block index)",
        "intruders",
    );
    s.push_str("</svg>");
    s
}

pub fn sweep_svg(r: &Report) -> String {
    let (step, ymax) = nice_axis(
        r.results
            .sweep
            .iter()
            .map(|(_, n)| *n as f64)
            .fold(0.0, f64::max),
    );
    let f = Frame {
        w: 360.0,
        h: 220.0,
        left: 46.0,
        right: 10.0,
        top: 24.0,
        bottom: 40.0,
        x: (0.0, 1.0),
        y: (0.0, ymax),
    };
    let mut s = String::new();
    f.open(&mut s, "Intruders versus epsilon");
    let _ = write!(
        s,
        r#"<text x="{}" y="14" font-weight="bold">Intruders vs ε (k = {}, rule only)</text>"#,
        f.left,
        r.results.k()
    );
    let pts: Vec<String> = r
        .results
        .sweep
        .iter()
        .map(|(e, n)| format!("{:.1},{:.1}", f.px(*e), f.py(*n as f64)))
        .collect();
    let _ = write!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{TUNED}" stroke-width="2"/>"#,
        pts.join(" ")
    );
    for (e, n) in &r.results.sweep {
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{TUNED}"><title>ε = {e:.1}: {n}</title></circle>"#,
            f.px(*e),
            f.py(*n as f64)
        );
    }
    let x = f.px(r.results.epsilon());
    let _ = write!(
        s,
        r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{INTRUDER}" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="{INTRUDER}">ε = {}</text>"#,
        f.py(0.0),
        f.py(ymax),
        x + 3.0,
        f.py(ymax) + 10.0,
        r.results.epsilon()
    );
    let xt: Vec<(f64, String)> = (0..=5)
        .map(|i| (i as f64 / 5.0, format!("{:.1}", i as f64 / 5.0)))
        .collect();
    f.axes(&mut s, &xt, &int_ticks(step, ymax), "ε", "intruders");
    s.push_str("</svg>");
    s
}

pub fn spectrum_svg(m: &MatrixRow) -> String {
    let n = m.sigma_tuned.len().min(m.sigma_base.len());
    let (lo, hi) = spark_range(&m.sigma_tuned[..n], &m.sigma_base[..n]);
    let (lo, hi) = if lo.is_finite() {
        (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
    } else {
        (0.0, 1.0)
    };
    let f = Frame {
        w: 420.0,
        h: 220.0,
        left: 52.0,
        right: 10.0,
        top: 24.0,
        bottom: 40.0,
        x: (0.0, (n.max(2) - 1) as f64),
        y: (lo, hi),
    };
    let mut s = String::new();
    f.open(&mut s, &format!("Singular values of {}", m.name));
    let _ = write!(
        s,
        r#"<text x="{}" y="14" font-weight="bold">Singular values (log scale)</text>"#,
        f.left
    );
    for (vals, color, label, ly) in [
        (&m.sigma_base, BASE, "base W0", 0.0),
        (&m.sigma_tuned, TUNED, "fine-tuned W", 14.0),
    ] {
        let pts: Vec<String> = vals[..n]
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    f.px(i as f64),
                    f.py(v.max(1e-30).log10().clamp(lo, hi))
                )
            })
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
            pts.join(" ")
        );
        let lx = f.w - f.right - 110.0;
        let _ = write!(
            s,
            r#"<line x1="{lx}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            f.top + 6.0 + ly,
            lx + 18.0,
            f.top + 6.0 + ly,
            lx + 22.0,
            f.top + 10.0 + ly
        );
    }
    for &j in &m.intruders {
        if j < n {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="none" stroke="{INTRUDER}" stroke-width="2"><title>intruder j = {j}</title></circle>"#,
                f.px(j as f64),
                f.py(m.sigma_tuned[j].max(1e-30).log10().clamp(lo, hi))
            );
        }
    }
    let lx = f.w - f.right - 110.0;
    let _ = write!(
        s,
        r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="none" stroke="{INTRUDER}" stroke-width="2"/><text x="{:.1}" y="{:.1}">intruder</text>"#,
        lx + 9.0,
        f.top + 34.0,
        lx + 22.0,
        f.top + 38.0
    );
    let xt: Vec<(f64, String)> = (0..=4)
        .map(|i| (n.max(2) - 1) as f64 * i as f64 / 4.0)
        .map(|v| (v, format!("{}", v.round())))
        .collect();
    let yt: Vec<(f64, String)> = (lo as i64..=hi as i64)
        .map(|e| (e as f64, format!("1e{e}")))
        .collect();
    f.axes(&mut s, &xt, &yt, "index j (by σ, descending)", "σ");
    s.push_str("</svg>");
    s
}

pub fn heatmap_svg(m: &MatrixRow) -> Option<String> {
    let cols = m.heat.as_ref()?.cols;
    heatmap_svg_titled(m, &format!("|cos(base i, tuned j)|, top {cols}"))
}

/// The heatmap under a heading of the caller's.
pub fn heatmap_svg_titled(m: &MatrixRow, heading: &str) -> Option<String> {
    let heat = m.heat.as_ref()?;
    let (rows, cols, data) = (&heat.rows, &heat.cols, &heat.values);
    let cell = (240.0 / *cols as f64).clamp(4.0, 16.0);
    let (left, top) = (52.0, 30.0);
    let w = left + cell * *cols as f64 + 70.0;
    let h = top + cell * *rows as f64 + 44.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="11" fill="currentColor" role="img"><title>|cos| between base and tuned singular vectors of {}</title>"#,
        escape(&m.name)
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="12" font-weight="bold">{}</text>"#,
        escape(heading)
    );
    for i in 0..*rows {
        for j in 0..*cols {
            let v = data[i * cols + j];
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{cell:.1}" height="{cell:.1}" fill="{}"><title>i = {i}, j = {j}: {v:.3}</title></rect>"#,
                left + cell * j as f64,
                top + cell * i as f64,
                viridis(v)
            );
        }
    }
    for &j in &m.intruders {
        if j < *cols {
            let x = left + cell * (j as f64 + 0.5);
            let _ = write!(
                s,
                r#"<path d="M{:.1},{:.1} L{:.1},{:.1} L{x:.1},{:.1} Z" fill="{INTRUDER}"><title>intruder j = {j}</title></path>"#,
                x - 4.0,
                top - 9.0,
                x + 4.0,
                top - 9.0,
                top - 2.0
            );
        }
    }
    let bottom = top + cell * *rows as f64;
    for t in [0, cols / 2, cols - 1] {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t}</text>"#,
            left + cell * (t as f64 + 0.5),
            bottom + 13.0
        );
    }
    for t in [0, rows / 2, rows - 1] {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{t}</text>"#,
            left - 4.0,
            top + cell * (t as f64 + 0.5) + 4.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">tuned singular vector j (▼ intruder)</text>"#,
        left + cell * *cols as f64 / 2.0,
        bottom + 30.0
    );
    let _ = write!(
        s,
        r#"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">base singular vector i</text>"#,
        top + cell * *rows as f64 / 2.0
    );
    // Colour bar.
    let cx = left + cell * *cols as f64 + 16.0;
    let ch = cell * *rows as f64;
    for k in 0..20 {
        let v = 1.0 - k as f32 / 19.0;
        let _ = write!(
            s,
            r#"<rect x="{cx:.1}" y="{:.1}" width="12" height="{:.2}" fill="{}"/>"#,
            top + ch * k as f64 / 20.0,
            ch / 20.0 + 0.5,
            viridis(v)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}">1</text><text x="{:.1}" y="{:.1}">0</text>"#,
        cx + 16.0,
        top + 9.0,
        cx + 16.0,
        top + ch
    );
    s.push_str("</svg>");
    Some(s)
}

/// The document's head (inline style, nothing fetched) and the body's start.
pub(crate) fn head(title: &str, css: &str) -> String {
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{}</title><style>
:root{{color-scheme:light dark}}body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;line-height:1.4}}
table{{border-collapse:collapse;margin:.5rem 0}}td,th{{border:1px solid #8886;padding:.15rem .5rem;text-align:right}}th{{background:#8882}}
td:first-child,th:first-child{{text-align:left}}code{{font-size:.9em}}.intr{{color:#e0443e;font-weight:bold}}.flag{{color:#c04fc0;font-weight:bold}}
.plots{{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start}}.muted{{opacity:.7}}section{{border-top:1px solid #8886;margin-top:1.5rem}}{}
</style></head><body>"#,
        escape(title),
        css
    )
}

pub fn html(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&head("lorascope report", ""));
    let _ = write!(
        s,
        "<h1>lorascope report</h1><p class=muted>lorascope {} · {} · k = {} · ε = {}{}</p>",
        escape(&r.results.lorascope_version),
        escape(&r.time),
        r.results.k(),
        r.results.epsilon(),
        escape(&r.results.rule_suffix())
    );
    s.push_str("<table><tr><th>input</th><th>path</th><th>kind</th><th>bytes</th><th>header xxh3</th></tr>");
    for (label, fi) in [
        ("base", &r.results.inputs.base),
        ("tuned", &r.results.inputs.tuned),
    ] {
        let _ = write!(s, "<tr><td>{label}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>", escape(&fi.path), fi.kind, fi.bytes, fi.header_hashes.join(" "));
    }
    s.push_str("</table>");
    if let Some(line) = r.results.adapter_line() {
        let _ = write!(s, "<p>{}</p>", escape(&line));
    }
    let _ = write!(
        s,
        "<h2>Summary</h2><p><b class=intr>{}</b> {}</p>",
        super::count(r.results.total_intruders, "intruder", "intruders"),
        escape(&r.results.summary_tail())
    );
    if let Some(note) = r.results.cluster_note() {
        let _ = write!(s, "<p class=muted>Note: {}.</p>", escape(&note));
    }
    for super::model::Failure { name: n, error: e } in r.results.failed() {
        let _ = write!(
            s,
            "<p class=intr><code>{}</code> could not be analysed: {}</p>",
            escape(n),
            escape(e)
        );
    }
    let _ = write!(
        s,
        "<div class=plots>{}{}</div>",
        per_layer_svg(r),
        sweep_svg(r)
    );
    s.push_str("<table><tr><th>ε</th>");
    for (e, _) in &r.results.sweep {
        let _ = write!(s, "<th>{e:.1}</th>");
    }
    s.push_str("</tr><tr><td>intruders</td>");
    for (_, n) in &r.results.sweep {
        let _ = write!(s, "<td>{n}</td>");
    }
    s.push_str("</tr></table><h2>Matrices</h2>");
    if r.sections.is_empty() {
        s.push_str("<p>No matrix selected (by default: those with intruders or user flags).</p>");
    }
    for m in &r.sections {
        let _ = write!(s, "<section><h3><code>{}</code></h3><p>{}×{} · <b class=intr>{}</b> · ‖ΔW‖/‖W0‖ = {:.4} · effective rank of ΔW = {}</p>",
            escape(&m.name), m.shape[0], m.shape[1],
            super::model::intruder_summary(&m.intruders),
            m.delta_rel_norm, m.delta_effective_rank.map_or("—".to_string(), |x| format!("{x:.2}")));
        let n = m.sigma_tuned.len().min(32);
        let (lo, hi) = spark_range(
            &m.sigma_tuned[..n],
            &m.sigma_base[..n.min(m.sigma_base.len())],
        );
        let _ = write!(
            s,
            "<p class=muted><code>tuned {}<br>base&nbsp; {}</code></p>",
            sparkline(&m.sigma_tuned[..n], lo, hi),
            sparkline(&m.sigma_base[..n.min(m.sigma_base.len())], lo, hi)
        );
        let _ = write!(
            s,
            "<div class=plots>{}{}</div>",
            spectrum_svg(m),
            heatmap_svg(m).unwrap_or_default()
        );
        s.push_str("<table><tr><th>j</th><th>σ tuned</th><th>σ/σ1</th><th>c_j</th><th title=\"participation number: 1 on one base vector, 2 for an even mix of two, large when spread\">PR</th><th>cluster c_j (size)</th><th>best base i</th><th>σ of base i</th><th>verdict</th></tr>");
        for v in &m.vectors {
            let verdict = match (v.intruder, v.flag.is_some()) {
                _ if !v.testable => "<span class=muted>σ ≈ 0: not tested</span>",
                (true, false) => "<span class=intr>intruder</span>",
                (true, true) => "<span class=flag>intruder (user flag)</span>",
                (false, true) => "<span class=flag>not an intruder (user flag)</span>",
                (false, false) => "",
            };
            let _ = write!(s, "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.2}</td><td>{:.4} ({})</td><td>{}</td><td>{:.4}</td><td>{verdict}</td></tr>",
                v.j, v.sigma, v.sigma_ratio, v.max_cos, v.participation, v.cluster_cos, v.cluster_size, v.best_base_index, v.best_base_sigma);
        }
        s.push_str("</table></section>");
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn axes_use_whole_1_2_5_steps() {
        assert_eq!(super::nice_axis(0.0), (1.0, 1.0));
        assert_eq!(super::nice_axis(1.0), (1.0, 1.0));
        assert_eq!(super::nice_axis(33.0), (10.0, 40.0));
        assert_eq!(super::nice_axis(118.0), (50.0, 150.0));
        let t = super::int_ticks(10.0, 40.0);
        assert_eq!(
            t.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
            ["0", "10", "20", "30", "40"]
        );
    }
}
