//! The matrix list: per matrix its intruder count, mark and flag.

use super::*;

pub(super) fn render_layers(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let title = format!(
        " matrices {}{}{} ",
        app.list.visible.len(),
        app.list
            .filter
            .as_ref()
            .map(|(t, _)| format!(" /{t}"))
            .unwrap_or_default(),
        if app.list.sort == SortBy::Intruders {
            " by count"
        } else {
            ""
        }
    );
    let b = block(title, app.focus == Pane::Layers, theme);
    let inner_h = area.height.saturating_sub(2) as usize;
    let rows: Vec<Row> = app
        .list
        .visible
        .iter()
        .map(|&i| {
            let r = &app.rows[i];
            let mark = if app.user.marks.contains(&r.name) {
                "●"
            } else {
                " "
            };
            let flagged = app.user.flags.contains_key(&r.name);
            let (count, style) = match &r.status {
                Status::Queued => ("·".to_string(), theme.dim()),
                Status::Computing(t) => (format!("{}s", t.elapsed().as_secs()), theme.dim()),
                Status::Failed(_) => ("✗".to_string(), theme.intruder()),
                Status::Done(_) => {
                    let n = app.intruders(i).map_or(0, |v| v.len());
                    // A glyph as well as a colour: readable without colour too.
                    (
                        if n > 0 {
                            format!("{n}▲")
                        } else {
                            n.to_string()
                        },
                        if n > 0 {
                            theme.intruder()
                        } else {
                            Style::new()
                        },
                    )
                }
            };
            Row::new(vec![
                Cell::from(mark),
                Cell::from(short_name(&r.name, &r.block)),
                Cell::from(format!("{}×{}", r.shape.0, r.shape.1)).style(theme.dim()),
                Cell::from(Line::from(count).alignment(Alignment::Right)).style(style),
                Cell::from(if flagged { "f" } else { "" }).style(theme.flagged()),
            ])
        })
        .collect();
    let offset = layout::list_offset(app.list.sel, app.list.visible.len(), inner_h);
    let mut state = TableState::default()
        .with_offset(offset)
        .with_selected(Some(app.list.sel));
    // Narrow panes drop the shape column (the spectrum pane shows it).
    let shape_w = if area.width >= 50 { 9 } else { 0 };
    let table = Table::new(
        rows,
        [
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(shape_w),
            Constraint::Length(4),
            Constraint::Length(1),
        ],
    )
    .column_spacing(1)
    .block(b)
    .row_highlight_style(theme.selected());
    f.render_stateful_widget(table, area, &mut state);
}
