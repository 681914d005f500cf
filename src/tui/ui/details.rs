//! The top-vector table: σ/σ1, c_j, best base index and the verdict per vector.

use super::*;

pub(super) fn render_details(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let b = block(" top vectors ", app.focus == Pane::Details, theme);
    let Some(r) = app.selected_report() else {
        let inner = b.inner(area);
        f.render_widget(b, area);
        f.render_widget(Paragraph::new(status_text(app)).style(theme.dim()), inner);
        return;
    };
    let name = &app.rows[app.selected_row().unwrap()].name;
    let shown = app.rule.k().max(app.cursor_j + 1).min(r.vectors.len());
    let rows: Vec<Row> = r.vectors[..shown]
        .iter()
        .enumerate()
        .map(|(j, v)| {
            let flag = app.flag(name, j);
            let intr = app.is_intruder(name, r, j);
            let verdict = match (intr, flag.is_some()) {
                _ if !r.is_testable(j) => Cell::from("σ≈0").style(theme.dim()),
                (true, false) => Cell::from("intr").style(theme.intruder()),
                (true, true) => Cell::from("intr*").style(theme.flagged()),
                (false, true) => Cell::from("ok*").style(theme.flagged()),
                (false, false) => Cell::from("ok"),
            };
            Row::new(vec![
                Cell::from(j.to_string()),
                Cell::from(format!("{:.3}", v.sigma_ratio)),
                Cell::from(format!("{:.3}", v.max_cos)),
                Cell::from(v.best_base_index.to_string()),
                verdict,
                Cell::from(if v.sigma >= 1e4 || v.sigma < 1e-3 {
                    format!("{:.2e}", v.sigma)
                } else {
                    format!("{:.3}", v.sigma)
                }),
            ])
        })
        .collect();
    let offset = layout::details_offset(app.cursor_j, area.height.saturating_sub(3) as usize);
    let mut state = TableState::default()
        .with_offset(offset)
        .with_selected(Some(app.cursor_j));
    let table = Table::new(
        rows,
        [
            Constraint::Length(3),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(4),
            Constraint::Length(5),
            // σ only where it fits whole.
            Constraint::Length(if area.width >= 40 { 9 } else { 0 }),
        ],
    )
    .column_spacing(1)
    .header(
        Row::new(vec!["j", "σ/σ1", "c_j", "base", "rule", "σ"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(b)
    .row_highlight_style(theme.selected());
    f.render_stateful_widget(table, area, &mut state);
}
