//! Popups: help (scrolls where it does not fit), the export choice, the prompts, the repair
//! dialog and its result.

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

/// The repair dialog: λ, scope, format, output; the field under the cursor in reverse.
pub(super) fn render_repair_form(form: &RepairForm, theme: &Theme, f: &mut Frame, area: Rect) {
    use crate::repair::{Format, Scope};
    let choice = |on: bool, text: &str| {
        if on {
            format!("◀ {text} ▶")
        } else {
            text.to_string()
        }
    };
    let values = [
        format!("{}▏", form.lambda),
        choice(
            true,
            match form.scope {
                Scope::Top => "top: each matrix's highest intruder",
                Scope::All => "all: every intruder in the top k",
            },
        ),
        choice(
            form.adapter,
            match form.format {
                Format::Adapter => "adapter (PEFT)",
                Format::Merged => "merged model",
            },
        ),
        format!("{}▏", form.output),
    ];
    let mut lines: Vec<Line> = RepairForm::FIELDS
        .iter()
        .zip(&values)
        .enumerate()
        .map(|(i, (label, value))| {
            let style = if i == form.field {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Line::from(vec![
                Span::raw(format!("{label:<7} ")),
                Span::styled(value.clone(), style),
            ])
        })
        .collect();
    lines.push(
        Line::from("λ: 0 removes, 1 keeps; the paper found 0.7–0.9 keeps accuracy")
            .style(theme.dim()),
    );
    let title = format!(" repair · {} ", crate::tui::keys::form_hint());
    popup(f, area, &title, lines, theme);
}

/// A finished repair: what was written, then intruders before and after per matrix.
pub(super) fn render_repaired(o: &RepairOutcome, theme: &Theme, f: &mut Frame, area: Rect) {
    let v = &o.verification;
    let mut lines = vec![Line::from(format!(
        "wrote {}: {} in {}",
        o.path.display(),
        crate::report::count(o.scaled, "intruder scaled", "intruders scaled"),
        crate::report::count(o.matrices, "matrix", "matrices")
    ))];
    for n in &o.notes {
        lines.push(Line::from(n.clone()).style(theme.dim()));
    }
    let (tb, ta) = v.totals();
    lines.push(Line::from(format!(
        "intruders (k={}, ε={}): {tb} before, {ta} after",
        v.rule.k(),
        v.rule.epsilon()
    )));
    // As many rows as fit, the worst first: gains, then failures, then the rest.
    let room = (area.height as usize).saturating_sub(lines.len() + 6);
    let mut rows: Vec<&crate::repair::VerifyRow> = v.shown().collect();
    rows.sort_by_key(|r| match &r.after {
        Ok(a) if *a > r.before => 0,
        Err(_) => 1,
        _ => 2,
    });
    let w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(6)
        .min(48);
    lines.push(Line::from(format!("{:<w$}  before  after", "matrix")).style(theme.dim()));
    for r in rows.iter().take(room) {
        let name = crate::report::shown_name(&r.name, Some(w));
        let (after, style) = match &r.after {
            Ok(a) if *a > r.before => (format!("{a:>5}  more"), theme.intruder()),
            Ok(a) => (format!("{a:>5}"), Style::new()),
            Err(e) => (format!("FAILED: {e}"), theme.intruder()),
        };
        lines.push(Line::from(format!("{name:<w$}  {:>6}  {after}", r.before)).style(style));
    }
    if rows.len() > room {
        lines.push(
            Line::from(format!(
                "… {} more rows (repair --verify lists all)",
                rows.len() - room
            ))
            .style(theme.dim()),
        );
    }
    popup(f, area, " repaired · any key closes ", lines, theme);
}
