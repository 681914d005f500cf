//! The top-vector table: σ/σ1, c_j (as the rule reads it), the participation number, best
//! base index and the verdict per vector.

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
    // Columns: j, σ/σ1, c_j, PR, base, rule, σ; PR and σ only where they fit whole (a column
    // left empty would still take its spacing from the others).
    let widths = [3, 5, 5, 5, 4, 5, 9];
    let shown_cols: Vec<usize> = (0..widths.len())
        .filter(|&c| match c {
            3 => area.width >= 40,
            6 => area.width >= 46,
            _ => true,
        })
        .collect();
    let pick = |cells: Vec<Cell<'static>>| -> Row<'static> {
        Row::new(
            cells
                .into_iter()
                .enumerate()
                .filter(|(c, _)| shown_cols.contains(c))
                .map(|(_, cell)| cell),
        )
    };
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
            pick(vec![
                Cell::from(j.to_string()),
                Cell::from(format!("{:.3}", v.sigma_ratio)),
                Cell::from(format!("{:.3}", v.c(&app.rule))),
                Cell::from(participation(v.participation)),
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
        shown_cols
            .iter()
            .map(|&c| Constraint::Length(widths[c]))
            .collect::<Vec<_>>(),
    )
    .column_spacing(1)
    .header(
        pick(
            ["j", "σ/σ1", "c_j", "PR", "base", "rule", "σ"]
                .map(Cell::from)
                .to_vec(),
        )
        .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(b)
    .row_highlight_style(theme.selected());
    f.render_stateful_widget(table, area, &mut state);
}

/// The participation number in at most 5 characters: 1.90, 99.6, 1234.
pub(super) fn participation(pr: f64) -> String {
    if pr < 10.0 {
        format!("{pr:.2}")
    } else if pr < 100.0 {
        format!("{pr:.1}")
    } else {
        format!("{pr:.0}")
    }
}
