//! The title line (inputs, rule, totals, progress) and the status bar (messages, hints).

use super::*;

pub(super) fn render_title(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let progress = if app.done() < app.rows.len() {
        let eta = app
            .eta()
            .map(|d| format!(" eta {}s", d.as_secs()))
            .unwrap_or_default();
        format!(
            "  [{}/{}{eta}{}]",
            app.done(),
            app.rows.len(),
            if app.paused { " paused" } else { "" }
        )
    } else {
        String::new()
    };
    let line = Line::from(vec![
        Span::styled("lorascope ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{}  ", app.title)),
        Span::styled(
            format!(
                "k={} ε={:.2}{}",
                app.rule.k(),
                app.rule.epsilon(),
                // The paper's rule goes unmarked: it is the one the numbers usually mean.
                match app.rule.kind() {
                    crate::spectral::rule::RuleKind::Paper => "",
                    crate::spectral::rule::RuleKind::DegenerateAware => " degenerate-aware",
                }
            ),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!("  intruders {}", app.total_intruders()),
            theme.intruder(),
        ),
        Span::raw(progress),
        Span::styled(
            app.repair
                .running
                .as_ref()
                .map(|r| format!("  [repair: {r}]"))
                .unwrap_or_default(),
            Style::new().add_modifier(Modifier::BOLD),
        ),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

/// The message or the hints that fit on the left; the flag count and `? help  q quit` always
/// on the right.
pub(super) fn render_status(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let pinned_text = crate::tui::keys::pinned_hints().join("  ");
    let mut spans = Vec::new();
    let flags = app.overrides();
    if flags > 0 {
        let n = crate::report::count(flags, "flag", "flags");
        spans.push(Span::styled(n, theme.flagged()));
        spans.push(Span::raw("  "));
    }
    spans.push(Span::styled(pinned_text, theme.dim()));
    let right = Line::from(spans);
    let [left, _, pinned] = Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Length(2),
        Constraint::Length(right.width() as u16),
    ])
    .areas(area);
    let text = match &app.message {
        Some(m) => Span::styled(m.clone(), Style::new().add_modifier(Modifier::BOLD)),
        None => Span::styled(hints_line(left.width as usize), theme.dim()),
    };
    f.render_widget(Paragraph::new(Line::from(text)), left);
    f.render_widget(Paragraph::new(right), pinned);
}
