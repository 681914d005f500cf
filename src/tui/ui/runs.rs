//! Several runs: the run bar under the title, and the compare view (the selected matrix in
//! every run).

use super::*;
use crate::tui::app::{CompareState, RunBar};

/// ` 1 lora-r8 12 │ 2 full-ft 0 │ 3 seed2 …`: the shown run in reverse, each with its
/// intruders so far (under the shown run's k and ε); runs not yet loaded show `·`.
pub(super) fn render_run_bar(bar: &RunBar, theme: &Theme, f: &mut Frame, area: Rect) {
    let n = bar.labels.len().max(1);
    // Labels share the width; each keeps at least a few characters.
    let label_w = (area.width as usize / n).saturating_sub(10).clamp(6, 28);
    let mut spans = Vec::new();
    for (i, label) in bar.labels.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled("│", theme.dim()));
        }
        let count = match bar.totals.get(i).copied().flatten() {
            Some((k, done, total)) if done < total => format!("{k}…"),
            Some((k, ..)) => k.to_string(),
            None => "·".into(),
        };
        let text = format!(
            " {} {} {count} ",
            i + 1,
            crate::report::shown_name(label, Some(label_w))
        );
        let style = if i == bar.active {
            theme.selected().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        spans.push(Span::styled(text, style));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// One row per run: its intruders in this matrix by the rule, its top-k c_j (intruders
/// marked), and where the shown run's vector under the cursor is found in it.
pub(super) fn render_compare(
    app: &App,
    c: &CompareState,
    theme: &Theme,
    f: &mut Frame,
    area: Rect,
) {
    let (k, eps) = (app.rule.k(), app.rule.epsilon());
    let j = app.cursor_j;
    let labels = app
        .runs
        .as_ref()
        .map(|b| b.labels.clone())
        .unwrap_or_default();
    let from = labels.get(c.from).cloned().unwrap_or_default();
    let lw = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(3)
        .clamp(3, 20);
    let shown = k.min(30);
    let mut lines = vec![Line::from(format!(
        "{:<lw$}  {:>5}  {:<shown$}  u{j} of {}",
        "run",
        "intr.",
        format!("c_j, j < {shown}"),
        crate::report::shown_name(&from, Some(16)),
    ))
    .style(Style::new().add_modifier(Modifier::BOLD))];
    match &c.rows {
        None => lines.push(Line::from("computing the matrix in every run…").style(theme.dim())),
        Some(rows) => {
            for (label, r) in rows {
                let name = format!("{:<lw$}", crate::report::shown_name(label, Some(lw)));
                let mut spans = vec![Span::raw(name)];
                match r {
                    Err(e) => spans.push(Span::styled(format!("  {e}"), theme.dim())),
                    Ok(a) => {
                        let cs = a.cos(&app.rule);
                        let n = app.rule.intruders(&cs).len();
                        spans.push(Span::styled(
                            format!("  {n:>5}  "),
                            if n > 0 {
                                theme.intruder()
                            } else {
                                Style::new()
                            },
                        ));
                        // Bar height: how well the vector is matched in the base.
                        const EIGHTHS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
                        for (jj, &cos) in cs.iter().take(shown).enumerate() {
                            let ch = EIGHTHS[((cos.clamp(0.0, 1.0) * 7.0).round()) as usize];
                            let style = if app.rule.is_intruder_at(jj, cos) {
                                theme.intruder()
                            } else {
                                theme.dim()
                            };
                            spans.push(Span::styled(ch.to_string(), style));
                        }
                        let pad = shown.saturating_sub(cs.len().min(shown));
                        spans.push(Span::raw(" ".repeat(pad + 2)));
                        spans.push(match a.matches.get(j).and_then(Option::as_ref) {
                            Some(p) => Span::styled(
                                format!("{:.2} at {}", p.cos, p.rank),
                                if p.cos >= eps {
                                    Style::new().add_modifier(Modifier::BOLD)
                                } else {
                                    theme.dim()
                                },
                            ),
                            None => Span::styled("—", theme.dim()),
                        });
                    }
                }
                lines.push(Line::from(spans));
            }
        }
    }
    lines.push(
        Line::from(format!(
            "k={k} ε={eps:.2} · bars: c_j, low: intruder · right: best |cos| with u{j} (rank)"
        ))
        .style(theme.dim()),
    );
    lines.push(Line::from("←→ vector · any other key closes").style(theme.dim()));
    let title = format!(
        " {} in every run ",
        crate::report::shown_name(&c.matrix, Some(50))
    );
    popup(f, area, &title, lines, theme);
}
