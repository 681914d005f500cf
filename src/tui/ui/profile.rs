//! The profile pane: |cos| of the vector under the cursor against every base vector.

use super::*;

pub(super) fn render_profile(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let heat = app.heatmap.of(app.selected_row());
    let Some(h) = heat else {
        f.render_widget(block(" profile ", false, theme), area);
        return;
    };
    let j = app.cursor_j.min(h.cols - 1);
    let col: Vec<f32> = (0..h.rows).map(|i| h.at(i, j)).collect();
    let (best_i, best) = col
        .iter()
        .enumerate()
        .fold((0, 0f32), |a, (i, v)| if *v > a.1 { (i, *v) } else { a });
    // The participation number sums the profile: PR ≈ 2 is two base directions mixed, a
    // large one a flat profile (the paper's Fig. 2c).
    let pr = app
        .selected_report()
        .and_then(|r| r.vectors.get(j))
        .map_or(String::new(), |v| {
            let pr = super::details::participation(v.participation);
            // The base cluster it is matched against, where the degenerate-aware rule is on.
            match app.rule.kind() {
                crate::spectral::rule::RuleKind::DegenerateAware => format!(
                    ", PR {pr}, cluster of {} {:.3}",
                    v.cluster_size, v.cluster_cos
                ),
                crate::spectral::rule::RuleKind::Paper => format!(", PR {pr}"),
            }
        });
    let title = format!(" profile of u_{j}: |cos| vs base index, max {best:.3} at {best_i}{pr} ");
    let b = block(title, false, theme);
    let inner = b.inner(area);
    f.render_widget(b, area);
    // One bar per bucket of base vectors; the bucket's max keeps a spike visible.
    let w = inner.width.max(1) as usize;
    let per = h.rows.div_ceil(w);
    let bars: Vec<u64> = col
        .chunks(per)
        .map(|c| (c.iter().fold(0f32, |a, v| a.max(*v)) * 100.0) as u64)
        .collect();
    f.render_widget(
        Sparkline::default()
            .data(bars)
            .max(100)
            .style(theme.tuned_series()),
        inner,
    );
}
