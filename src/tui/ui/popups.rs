//! Popups: help (scrolls where it does not fit), the export choice, the prompts.

use super::*;

pub(super) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

pub(super) fn render_help(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let n = BINDINGS.len();
    // One column where it fits, else two; where two do not fit either, one that scrolls.
    let two_fit = area.width >= 78 && n.div_ceil(2) as u16 + 2 <= area.height;
    let one_fits = n as u16 + 2 <= area.height;
    let two = !one_fits && two_fit;
    let per_col = if two { n.div_ceil(2) } else { n };
    let visible = if one_fits || two {
        per_col
    } else {
        area.height.saturating_sub(2) as usize
    };
    let first = app.help.scroll.min(per_col - visible.min(per_col));
    let cell = |i: usize| -> Vec<Cell> {
        match BINDINGS.get(i) {
            Some(b) => vec![
                Cell::from(b.label()).style(Style::new().add_modifier(Modifier::BOLD)),
                Cell::from(b.help),
            ],
            None => vec![Cell::from(""), Cell::from("")],
        }
    };
    let rows: Vec<Row> = (first..(first + visible).min(per_col))
        .map(|i| {
            let mut cells = cell(i);
            if two {
                cells.extend(cell(i + per_col));
            }
            Row::new(cells)
        })
        .collect();
    let widths: Vec<Constraint> = if two {
        vec![
            Constraint::Length(6),
            Constraint::Length(30),
            Constraint::Length(6),
            Constraint::Length(30),
        ]
    } else {
        vec![Constraint::Length(6), Constraint::Fill(1)]
    };
    let title = if visible < per_col {
        format!(
            " keys {}–{} of {n} · ↑↓ scroll, any other key closes ",
            first + 1,
            first + visible
        )
    } else {
        " keys (any key closes) ".to_string()
    };
    let r = centered(area, if two { 78 } else { 56 }, visible as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Table::new(rows, widths).column_spacing(1).block(
            Block::bordered()
                .title(title)
                .border_style(theme.focus_border()),
        ),
        r,
    );
}

pub(super) fn render_input(prompt: &Prompt, text: &str, theme: &Theme, f: &mut Frame, area: Rect) {
    let label = match prompt {
        Prompt::Filter => "filter (regex, empty clears)",
        Prompt::Epsilon => "ε in (0, 1]",
        Prompt::K => "k",
    };
    let r = centered(area, 50, 3);
    f.render_widget(Clear, r);
    // The end of a long entry stays in view.
    let room = r.width.saturating_sub(3) as usize;
    let shown: String = {
        let n = text.chars().count();
        text.chars().skip(n.saturating_sub(room)).collect()
    };
    f.render_widget(
        Paragraph::new(format!("{shown}▏")).block(
            Block::bordered()
                .title(format!(" {label} · {} ", crate::tui::keys::prompt_hint()))
                .border_style(theme.focus_border()),
        ),
        r,
    );
}

/// A bordered box sized to its lines (wrapped where the screen is narrower), centred.
pub(super) fn popup(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line>, theme: &Theme) {
    let w = lines.iter().map(|l| l.width()).max().unwrap_or(0) as u16 + 4;
    let w = w.max(title.chars().count() as u16 + 4).min(area.width);
    let inner_w = w.saturating_sub(2).max(1) as usize;
    let h: usize = lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner_w))
        .sum();
    let r = centered(area, w, h as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(title.to_string())
                .border_style(theme.focus_border()),
        ),
        r,
    );
}
