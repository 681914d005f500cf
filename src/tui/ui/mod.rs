//! Drawing: a pure function of the state. One function per pane.

pub mod heatmap;

use std::ops::Range;

use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Bar, BarChart, BarGroup, Block, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row,
    Sparkline, SparklineBar, Table, TableState, Wrap,
};
use ratatui::Frame;

use super::app::{short_name, App, Pane, Popup, Prompt, SortBy, Status, Tab};
use super::keys::{hints_line, BINDINGS};
use super::layout::{self, MIN_HEIGHT, MIN_WIDTH};
use super::theme::Theme;
use heatmap::HeatmapView;

pub fn render(app: &App, theme: &Theme, f: &mut Frame) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "terminal too small ({}×{}): lorascope needs at least {MIN_WIDTH}×{MIN_HEIGHT} · q quits",
            area.width, area.height
        );
        f.render_widget(
            Paragraph::new(msg).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    let a = layout::areas(app, area);
    render_title(app, theme, f, a.title);
    match app.tab {
        Tab::Main => render_main(app, theme, f, &a),
        Tab::Overview => render_overview(app, theme, f, a.body),
    }
    render_status(app, theme, f, a.status);
    match &app.popup {
        Some(Popup::Help) => render_help(app, theme, f, area),
        Some(Popup::Export) => {
            let n = app.export_set().len();
            let lines = vec![
                Line::from(format!(
                    "export {} to the working folder as:",
                    crate::report::count(n, "matrix report", "matrix reports")
                )),
                Line::from(
                    super::keys::EXPORT_KEYS
                        .iter()
                        .map(|(c, _, what)| format!("{c} {what}"))
                        .collect::<Vec<_>>()
                        .join(" · "),
                ),
                Line::from("Esc cancel").style(theme.dim()),
            ];
            popup(f, area, " export ", lines, theme);
        }
        Some(Popup::Input { prompt, text }) => render_input(prompt, text, theme, f, area),
        None => {}
    }
}

fn block<'a>(title: impl Into<Line<'a>>, focused: bool, theme: &Theme) -> Block<'a> {
    let b = Block::bordered().title(title);
    if focused {
        b.border_style(theme.focus_border())
    } else {
        b
    }
}

fn render_title(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
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
            format!("k={} ε={:.2}", app.rule.k(), app.rule.epsilon()),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!("  intruders {}", app.total_intruders()),
            theme.intruder(),
        ),
        Span::raw(progress),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

fn render_main(app: &App, theme: &Theme, f: &mut Frame, a: &layout::Areas) {
    if let Some(r) = a.layers {
        render_layers(app, theme, f, r);
    }
    if let Some(r) = a.spectrum {
        render_spectrum(app, theme, f, r);
    }
    if let Some(r) = a.heatmap {
        render_heatmap(app, theme, f, r);
    }
    if let Some(r) = a.details {
        render_details(app, theme, f, r);
    }
    if let Some(r) = a.profile {
        render_profile(app, theme, f, r);
    }
}

fn render_layers(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let title = format!(
        " matrices {}{}{} ",
        app.visible.len(),
        app.filter
            .as_ref()
            .map(|(t, _)| format!(" /{t}"))
            .unwrap_or_default(),
        if app.sort == SortBy::Intruders {
            " by count"
        } else {
            ""
        }
    );
    let b = block(title, app.focus == Pane::Layers, theme);
    let inner_h = area.height.saturating_sub(2) as usize;
    let rows: Vec<Row> = app
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
    let offset = layout::list_offset(app.sel, app.visible.len(), inner_h);
    let mut state = TableState::default()
        .with_offset(offset)
        .with_selected(Some(app.sel));
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

/// log10 σ quantised to sparkline heights over a shared range.
fn spectrum_bars(values: &[f64], lo: f64, hi: f64) -> Vec<u64> {
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
fn spectrum_bins(len: usize, width: usize, cursor: usize, whole: bool) -> Vec<Range<usize>> {
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

fn render_spectrum(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let whole = app.selected_row().and_then(|r| app.full_spectrum(r));
    let title = app
        .selected_row()
        .map(|r| {
            let row = &app.rows[r];
            let name = row.name.strip_suffix(".weight").unwrap_or(&row.name);
            let what = if whole.is_some() {
                " · all σ".to_string()
            } else if let Some(t) = app.spectra_pending.get(&r) {
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
        bin.clone().any(|j| {
            r.vectors
                .get(j)
                .is_some_and(|m| app.is_intruder(name, j, m.max_cos))
        })
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

fn status_text(app: &App) -> String {
    match app.selected_row().map(|r| &app.rows[r].status) {
        None => "no matrix".into(),
        Some(Status::Queued) => "queued".into(),
        Some(Status::Computing(t)) => format!("computing… {}s", t.elapsed().as_secs()),
        Some(Status::Failed(e)) => format!("failed: {e}"),
        Some(Status::Done(_)) => String::new(),
    }
}

fn render_heatmap(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let focused = app.focus == Pane::Heatmap;
    let heat = app
        .heat
        .as_ref()
        .filter(|h| Some(h.row) == app.selected_row());
    let (Some(h), Some(r)) = (heat, app.selected_report()) else {
        let b = block(" |cos| base (y) × tuned (x) ", focused, theme);
        let inner = b.inner(area);
        f.render_widget(b, area);
        let failed = app
            .heat_error
            .as_ref()
            .filter(|(row, _)| Some(*row) == app.selected_row());
        let (t, style) = match (failed, app.selected_report()) {
            (Some((_, e)), Some(_)) => (format!("heatmap failed: {e}"), theme.intruder()),
            (None, Some(_)) => ("loading…".to_string(), theme.dim()),
            _ => (status_text(app), theme.dim()),
        };
        f.render_widget(
            Paragraph::new(t).style(style).wrap(Wrap { trim: true }),
            inner,
        );
        return;
    };
    let (i, j) = (app.cursor_i.min(h.rows - 1), app.cursor_j.min(h.cols - 1));
    let title = if area.width >= 36 {
        format!(" |cos| base {i} × tuned {j} = {:.3} ", h.at(i, j))
    } else {
        format!(" |cos| {i}×{j} = {:.3} ", h.at(i, j))
    };
    let b = block(title, focused, theme);
    let inner = b.inner(area);
    f.render_widget(b, area);
    if inner.height < 3 {
        return;
    }
    let v = layout::heat_view(app, h, inner, HeatmapView::rows_per_line(theme));
    let name = &app.rows[h.row].name;
    let intruder: Vec<bool> = (0..h.cols)
        .map(|c| {
            r.vectors
                .get(c)
                .is_some_and(|v| app.is_intruder(name, c, v.max_cos))
        })
        .collect();
    f.render_widget(
        HeatmapView {
            heat: h,
            col0: v.col0,
            row0: v.row0,
            cols: v.cols,
            cursor: (i, j),
            intruder: &intruder,
            theme: *theme,
        },
        v.map,
    );
    let mut spans = vec![Span::raw("0 ")];
    // Every distinct colour once, or 8 of 16 where the pane is narrow.
    let n = if v.legend.width >= 40 {
        theme.heat_steps()
    } else {
        theme.heat_steps().min(8)
    };
    for s in 0..n {
        let x = (s as f32 + 0.5) / n as f32;
        if theme.colored() {
            spans.push(Span::styled("█", Style::new().fg(theme.heat(x))));
        } else {
            let g = super::theme::MONO_RAMP[super::theme::ramp_index(x, 8)];
            spans.push(Span::raw(g.to_string()));
        }
    }
    let shown = v.cols.min(v.map.width as usize);
    let mut tail = if v.legend.width >= 30 {
        format!(
            " 1  j {}–{}/{}",
            v.col0,
            v.col0 + shown.saturating_sub(1),
            v.cols
        )
    } else {
        format!(" 1 {shown}/{}", v.cols)
    };
    // Zoomed and wider than what was computed: say where more come from.
    if app.zoom && v.map.width as usize > v.cols && v.cols == h.cols {
        tail += &format!(" (all computed; K > {} computes more)", h.cols);
    }
    spans.push(Span::raw(tail));
    f.render_widget(Paragraph::new(Line::from(spans)), v.legend);
}

fn render_details(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
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
            let intr = app.is_intruder(name, j, v.max_cos);
            let verdict = match (intr, flag.is_some()) {
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

fn render_profile(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let heat = app
        .heat
        .as_ref()
        .filter(|h| Some(h.row) == app.selected_row());
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
    let title = format!(" profile of u_{j}: |cos| vs base index, max {best:.3} at {best_i} ");
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

fn render_overview(app: &App, theme: &Theme, f: &mut Frame, body: Rect) {
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

    let curve = app.curve();
    let pts: Vec<(f64, f64)> = curve.iter().map(|(e, n)| (*e, *n as f64)).collect();
    let ymax = pts.iter().map(|p| p.1).fold(1.0, f64::max);
    let cur = vec![(app.rule.epsilon(), 0.0), (app.rule.epsilon(), ymax)];
    let chart = Chart::new(vec![
        Dataset::default()
            .name("intruders")
            .graph_type(GraphType::Line)
            .style(theme.tuned_series())
            .data(&pts),
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

/// The message or the hints that fit on the left; the flag count and `? help  q quit` always
/// on the right.
fn render_status(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let mut right = super::keys::pinned_hints().join("  ");
    let flags = app.overrides();
    if flags > 0 {
        right = format!("{}  {right}", crate::report::count(flags, "flag", "flags"));
    }
    let right_w = right.chars().count() as u16;
    let [left, _, pinned] = Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Length(2),
        Constraint::Length(right_w),
    ])
    .areas(area);
    let text = match &app.message {
        Some(m) => Span::styled(m.clone(), Style::new().add_modifier(Modifier::BOLD)),
        None => Span::styled(hints_line(left.width as usize), theme.dim()),
    };
    f.render_widget(Paragraph::new(Line::from(text)), left);
    let mut spans = Vec::new();
    if flags > 0 {
        let n = crate::report::count(flags, "flag", "flags");
        spans.push(Span::styled(n, theme.flagged()));
        spans.push(Span::raw("  "));
    }
    spans.push(Span::styled(
        super::keys::pinned_hints().join("  "),
        theme.dim(),
    ));
    f.render_widget(Paragraph::new(Line::from(spans)), pinned);
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn render_help(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
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
    let first = app.help_scroll.min(per_col - visible.min(per_col));
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

fn render_input(prompt: &Prompt, text: &str, theme: &Theme, f: &mut Frame, area: Rect) {
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
                .title(format!(" {label} · Enter Esc "))
                .border_style(theme.focus_border()),
        ),
        r,
    );
}

/// A bordered box sized to its lines (wrapped where the screen is narrower), centred.
fn popup(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line>, theme: &Theme) {
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
