//! The spectrum pane: tuned and base log σ as sparklines, a marker line, the numbers.

use super::*;

/// log10 σ quantised to sparkline heights over a shared range.
pub(super) fn spectrum_bars(values: &[f64], lo: f64, hi: f64) -> Vec<u64> {
    values
        .iter()
        .map(|s| {
            let l = s.max(1e-30).log10();
            (1.0 + 99.0 * ((l - lo) / (hi - lo).max(1e-12)).clamp(0.0, 1.0)) as u64
        })
        .collect()
}

/// Which values each sparkline bar stands for: one each around the cursor (top part), or
/// `len / width` each over the whole spectrum, so its tail is visible at any width.
pub(super) fn spectrum_bins(
    len: usize,
    width: usize,
    cursor: usize,
    whole: bool,
) -> Vec<Range<usize>> {
    if whole && len > width {
        (0..width)
            .map(|x| x * len / width..(x + 1) * len / width)
            .collect()
    } else {
        let n = width.min(len);
        // Keep the cursor in view.
        let start = cursor
            .min(len.saturating_sub(1))
            .saturating_sub(n.saturating_sub(1));
        (start..(start + n).min(len)).map(|j| j..j + 1).collect()
    }
}

pub(super) fn render_spectrum(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let whole = app.spectrum.shown(app.selected_row());
    let title = app
        .selected_row()
        .map(|r| {
            let row = &app.rows[r];
            let name = row.name.strip_suffix(".weight").unwrap_or(&row.name);
            let what = if whole.is_some() {
                " · all σ".to_string()
            } else if let Some(t) = app.spectrum.pending.get(&r) {
                format!(" · all σ… {}s", t.elapsed().as_secs())
            } else {
                String::new()
            };
            format!(" {name} {}×{}{what} ", row.shape.0, row.shape.1)
        })
        .unwrap_or_default();
    let b = block(title, app.focus == Pane::Spectrum, theme);
    let inner = b.inner(area);
    f.render_widget(b, area);
    let Some(r) = app.selected_report() else {
        f.render_widget(Paragraph::new(status_text(app)).style(theme.dim()), inner);
        return;
    };
    let row = app.selected_row().unwrap();
    let name = &app.rows[row].name;
    let tuned = whole.unwrap_or(&r.sigma_tuned);
    // A gutter names the series; narrow panes do without it.
    let gutter_w = if inner.width >= 40 { 6 } else { 0 };
    let [upper, text] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(inner);
    let [gutter, plot] =
        Layout::horizontal([Constraint::Length(gutter_w), Constraint::Fill(1)]).areas(upper);
    let bins = spectrum_bins(
        tuned.len(),
        plot.width as usize,
        app.cursor_j,
        whole.is_some(),
    );
    // A bar shows its bin's largest value (spectra descend: the first).
    let first = |v: &[f64], bin: &Range<usize>| v.get(bin.start).copied().unwrap_or(0.0);
    let t: Vec<f64> = bins.iter().map(|b| first(tuned, b)).collect();
    let b0: Vec<f64> = bins
        .iter()
        .filter(|b| b.start < r.sigma_base.len())
        .map(|b| first(&r.sigma_base, b))
        .collect();
    let all = t.iter().chain(&b0).filter(|s| **s > 0.0).map(|s| s.log10());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    // Tuned bars, a marker line (▲ intruder, ↑ cursor) where there is room, base bars, a line
    // of numbers.
    let marker_h = u16::from(plot.height >= 3);
    let spark_h = plot.height.saturating_sub(marker_h) / 2;
    let rows = Layout::vertical([
        Constraint::Length(spark_h.max(1)),
        Constraint::Length(marker_h),
        Constraint::Length(spark_h.max(1)),
    ]);
    let [tuned_area, marker_area, base_area] = rows.areas(plot);
    let [tuned_label, _, base_label] = rows.areas(gutter);
    f.render_widget(
        Paragraph::new("tuned").style(theme.tuned_series()),
        tuned_label,
    );
    f.render_widget(
        Paragraph::new("base").style(theme.base_series()),
        base_label,
    );
    let is_intruder = |bin: &Range<usize>| {
        bin.clone()
            .any(|j| j < r.vectors.len() && app.is_intruder(name, r, j))
    };
    let tuned_bars: Vec<SparklineBar> = spectrum_bars(&t, lo, hi)
        .into_iter()
        .zip(&bins)
        .map(|(v, bin)| {
            let style = if bin.contains(&app.cursor_j) {
                Some(Style::new().add_modifier(Modifier::REVERSED))
            } else if is_intruder(bin) {
                Some(theme.intruder())
            } else {
                None
            };
            SparklineBar::from(v).style(style)
        })
        .collect();
    f.render_widget(
        Sparkline::default()
            .data(tuned_bars)
            .max(100)
            .style(theme.tuned_series()),
        tuned_area,
    );
    if marker_h > 0 {
        let marks: Vec<Span> = bins
            .iter()
            .map(
                |bin| match (is_intruder(bin), bin.contains(&app.cursor_j)) {
                    (true, true) => {
                        Span::styled("▲", theme.intruder().add_modifier(Modifier::REVERSED))
                    }
                    (true, false) => Span::styled("▲", theme.intruder()),
                    (false, true) => Span::styled("↑", Style::new().add_modifier(Modifier::BOLD)),
                    (false, false) => Span::raw(" "),
                },
            )
            .collect();
        f.render_widget(Paragraph::new(Line::from(marks)), marker_area);
    }
    f.render_widget(
        Sparkline::default()
            .data(spectrum_bars(&b0, lo, hi))
            .max(100)
            .style(theme.base_series()),
        base_area,
    );
    let range = format!("log σ {lo:.2}…{hi:.2}");
    let j = app.cursor_j;
    let info = if let Some(w) = whole {
        // Bars stand for bins here: the spectrum's extent says more than the cursor's values.
        let per = w.len() as f64 / bins.len().max(1) as f64;
        format!(
            "{} values{} · σ {:.4} … {:.3e} · {range}",
            w.len(),
            if per > 1.0 {
                format!(", {per:.1}/bar")
            } else {
                String::new()
            },
            w.first().copied().unwrap_or(f64::NAN),
            w.last().copied().unwrap_or(f64::NAN)
        )
    } else {
        let mut info = format!(
            "j={j} σ={:.4} base σ={:.4} · {range}",
            r.sigma_tuned.get(j).copied().unwrap_or(f64::NAN),
            r.sigma_base.get(j).copied().unwrap_or(f64::NAN),
        );
        if !r.has_whole_spectrum() {
            info += &format!(" · top {} (F: all)", r.sigma_tuned.len());
        }
        info
    };
    f.render_widget(Paragraph::new(info), text);
}

#[cfg(test)]
mod tests {
    use super::spectrum_bins;

    #[test]
    fn whole_spectrum_bins_cover_every_value_once_and_top_bins_follow_the_cursor() {
        for (len, width) in [(4096, 46), (128, 46), (46, 46), (10, 46), (11008, 157)] {
            let bins = spectrum_bins(len, width, 0, true);
            assert_eq!(bins.len(), width.min(len));
            assert_eq!(bins.first().unwrap().start, 0);
            assert_eq!(bins.last().unwrap().end, len);
            assert!(bins.windows(2).all(|b| b[0].end == b[1].start));
            assert!(bins.iter().all(|b| !b.is_empty()));
        }
        let top = spectrum_bins(32, 10, 0, false);
        assert_eq!(top, (0..10).map(|j| j..j + 1).collect::<Vec<_>>());
        let top = spectrum_bins(32, 10, 25, false);
        assert_eq!((top[0].start, top[9].end), (16, 26));
        assert_eq!(spectrum_bins(32, 10, 99, false)[9], 31..32);
    }
}
