//! Drawing: a pure function of the state, one file per pane (layers, spectrum, heatmap, details,
//! profile, overview), plus the title and status bars and the popups; `render` puts them where
//! [`super::layout`] says.

mod bars;
mod details;
pub mod heatmap;
mod layers;
mod overview;
mod popups;
mod profile;
mod runs;
mod spectrum;

use bars::{render_status, render_title};
use details::render_details;
use heatmap::render_heatmap;
use layers::render_layers;
use overview::render_overview;
use popups::{popup, render_help, render_input, render_repair_form, render_repaired};
use profile::render_profile;
use spectrum::render_spectrum;

use std::ops::Range;

use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Bar, BarChart, BarGroup, Block, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row,
    Sparkline, SparklineBar, Table, TableState, Wrap,
};
use ratatui::Frame;

use super::app::{
    short_name, App, Pane, Popup, Prompt, RepairForm, RepairOutcome, SortBy, Status, Tab,
};
use super::keys::{hints_line, BINDINGS};
use super::layout::{self, MIN_HEIGHT, MIN_WIDTH};
use super::theme::Theme;

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
    if let (Some(bar), Some(r)) = (&app.runs, a.runbar) {
        runs::render_run_bar(bar, theme, f, r);
    }
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
        Some(Popup::Repair(form)) => render_repair_form(form, theme, f, area),
        Some(Popup::Repaired(o)) => render_repaired(o, theme, f, area),
        Some(Popup::Compare) => {
            if let Some(c) = &app.compare {
                runs::render_compare(app, c, theme, f, area);
            }
        }
        None => {}
    }
}

pub(super) fn block<'a>(title: impl Into<Line<'a>>, focused: bool, theme: &Theme) -> Block<'a> {
    let b = Block::bordered().title(title);
    if focused {
        b.border_style(theme.focus_border())
    } else {
        b
    }
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

pub(super) fn status_text(app: &App) -> String {
    match app.selected_row().map(|r| &app.rows[r].status) {
        None => "no matrix".into(),
        Some(Status::Queued) => "queued".into(),
        Some(Status::Computing(t)) => format!("computing… {}s", t.elapsed().as_secs()),
        Some(Status::Failed(e)) => format!("failed: {e}"),
        Some(Status::Done(_)) => String::new(),
    }
}
