//! The overview tab: intruders per layer, the inputs, the count against ε.

use super::*;
use crate::spectral::rule::RuleKind;

pub(super) fn render_overview(app: &App, theme: &Theme, f: &mut Frame, body: Rect) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(body);
    let blocks = app.per_block();
    let bars: Vec<Bar> = blocks
        .iter()
        .map(|(b, n)| {
            let label = b.rsplit('.').next().unwrap_or(b).to_string();
            Bar::default()
                .value(*n as u64)
                .label(Line::from(label))
                .style(if *n > 0 {
                    theme.intruder()
                } else {
                    Style::new()
                })
        })
        .collect();
    let bar_w = ((left.width.saturating_sub(2) as usize / blocks.len().max(1)).saturating_sub(1))
        .clamp(1, 6) as u16;
    let [chart_area, info] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(9)]).areas(left);
    f.render_widget(
        BarChart::default()
            .block(Block::bordered().title(format!(
                " intruders per layer (k={}, ε={:.2}) ",
                app.rule.k(),
                app.rule.epsilon()
            )))
            .data(BarGroup::default().bars(&bars))
            .bar_width(bar_w)
            .bar_gap(1),
        chart_area,
    );
    use crate::report::count;
    let mut lines = vec![Line::from(format!(
        "{} in {} ({} analysed); {}, {} marked",
        count(app.total_intruders(), "intruder", "intruders"),
        count(app.rows.len(), "matrix", "matrices"),
        app.done(),
        count(app.overrides(), "user override", "user overrides"),
        app.user.marks.len()
    ))
    .style(Style::new().add_modifier(Modifier::BOLD))];
    lines.extend(app.inputs.iter().map(|s| Line::from(s.clone())));
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(" inputs "))
            .wrap(ratatui::widgets::Wrap { trim: true }),
        info,
    );

    // Both rules' curves: where they part, near-degenerate base directions were rotated
    // (the paper's rule counts those), the active one drawn in the tuned colour.
    let curve_pts = |kind| -> Vec<(f64, f64)> {
        app.curve_of(kind)
            .iter()
            .map(|(e, n)| (*e, *n as f64))
            .collect()
    };
    let (paper, aware) = (
        curve_pts(RuleKind::Paper),
        curve_pts(RuleKind::DegenerateAware),
    );
    let ymax = paper.iter().chain(&aware).map(|p| p.1).fold(1.0, f64::max);
    let cur = vec![(app.rule.epsilon(), 0.0), (app.rule.epsilon(), ymax)];
    let (active, other) = match app.rule.kind() {
        RuleKind::Paper => ((&paper, "paper"), (&aware, "degenerate-aware")),
        RuleKind::DegenerateAware => ((&aware, "degenerate-aware"), (&paper, "paper")),
    };
    let chart = Chart::new(vec![
        Dataset::default()
            .name(other.1)
            .graph_type(GraphType::Line)
            .style(theme.dim())
            .data(other.0),
        Dataset::default()
            .name(active.1)
            .graph_type(GraphType::Line)
            .style(theme.tuned_series())
            .data(active.0),
        Dataset::default()
            .name("current ε")
            .graph_type(GraphType::Line)
            .style(theme.dim())
            .data(&cur),
    ])
    .block(Block::bordered().title(format!(" count vs ε (k={}) ", app.rule.k())))
    .x_axis(
        Axis::default()
            .title("ε")
            .bounds([0.0, 1.0])
            .labels(["0", "0.5", "1"]),
    )
    .y_axis(
        Axis::default()
            .bounds([0.0, ymax])
            .labels(["0".to_string(), format!("{}", ymax as usize)]),
    );
    f.render_widget(chart, right);
}
