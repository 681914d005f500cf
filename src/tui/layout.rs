//! Where each pane goes, as a pure function of the state and the screen's size: drawing,
//! paging and the mouse all ask here, so a click lands where the pane was drawn.

use ratatui::layout::{Constraint, Layout, Rect};

use super::app::{App, Heat, Pane, Tab};

/// The smallest screen the explorer draws on (80×24 is the size it is designed for).
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

/// The screen's parts; a pane that does not fit (or is zoomed out of view) is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Areas {
    pub title: Rect,
    /// The run bar, with several runs.
    pub runbar: Option<Rect>,
    pub body: Rect,
    pub status: Rect,
    pub layers: Option<Rect>,
    pub spectrum: Option<Rect>,
    pub heatmap: Option<Rect>,
    pub details: Option<Rect>,
    pub profile: Option<Rect>,
}

impl Areas {
    pub fn of(&self, pane: Pane) -> Option<Rect> {
        match pane {
            Pane::Layers => self.layers,
            Pane::Spectrum => self.spectrum,
            Pane::Heatmap => self.heatmap,
            Pane::Details => self.details,
        }
    }

    /// The pane under a screen cell.
    pub fn pane_at(&self, x: u16, y: u16) -> Option<Pane> {
        let p = ratatui::layout::Position::new(x, y);
        [Pane::Layers, Pane::Spectrum, Pane::Heatmap, Pane::Details]
            .into_iter()
            .find(|&pane| self.of(pane).is_some_and(|r| r.contains(p)))
    }
}

/// The panes on a screen of this size. Small screens drop panes by priority (the profile first,
/// then whichever of heatmap and top vectors is not focused) instead of clipping them.
pub fn areas(app: &App, area: Rect) -> Areas {
    let bar = u16::from(app.runs.is_some());
    let [title, runbar, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(bar),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let mut a = Areas {
        title,
        runbar: (bar > 0).then_some(runbar),
        body,
        status,
        ..Areas::default()
    };
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT || app.tab != Tab::Main {
        return a;
    }
    if app.zoom {
        match app.focus {
            Pane::Layers => a.layers = Some(body),
            Pane::Spectrum => a.spectrum = Some(body),
            Pane::Heatmap => a.heatmap = Some(body),
            Pane::Details => a.details = Some(body),
        }
        return a;
    }
    // The list needs 28 columns for its short names; wide screens give it more.
    let left_w = if body.width < 100 {
        28
    } else {
        (body.width * 2 / 5).clamp(28, 60)
    };
    let [left, right] =
        Layout::horizontal([Constraint::Length(left_w), Constraint::Fill(1)]).areas(body);
    a.layers = Some(left);
    let tall = right.height >= 40;
    let spec_h = if tall { 8 } else { 6 };
    let prof_h = if tall {
        8
    } else if right.height >= 28 {
        4
    } else {
        0
    };
    let [spec, mid, prof] = Layout::vertical([
        Constraint::Length(spec_h),
        Constraint::Fill(1),
        Constraint::Length(prof_h),
    ])
    .areas(right);
    a.spectrum = Some(spec);
    a.profile = (prof_h > 0).then_some(prof);
    // The top-vector table's columns need 28; the heatmap takes the rest.
    let details_w = if mid.width >= 100 { mid.width / 2 } else { 28 };
    if mid.width >= details_w + 20 {
        let [heat, details] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(details_w)]).areas(mid);
        a.heatmap = Some(heat);
        a.details = Some(details);
    } else if app.focus == Pane::Details {
        a.details = Some(mid);
    } else {
        a.heatmap = Some(mid);
    }
    a
}

/// First row shown of a list of `len` rows with `sel` selected, in `height` rows: the
/// selection stays in the middle where it can.
pub fn list_offset(sel: usize, len: usize, height: usize) -> usize {
    sel.saturating_sub(height.saturating_sub(1) / 2)
        .min(len.saturating_sub(height))
}

/// First row shown of the top-vector table (`height` rows below its header).
pub fn details_offset(cursor: usize, height: usize) -> usize {
    cursor.saturating_sub(height.saturating_sub(1))
}

/// Where the heatmap's cells are: the map under its marker line, the legend below it, and
/// which tuned vectors (columns) and base vectors (rows) are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeatView {
    /// The marker line and the cells (the marker line is its first row).
    pub map: Rect,
    pub legend: Rect,
    pub col0: usize,
    pub row0: usize,
    /// Columns available: the heatmap's K, or when zoomed every one computed.
    pub cols: usize,
    /// Matrix rows per terminal row (2 with colour: `▀` with fg and bg).
    pub per: usize,
}

impl HeatView {
    /// The (base i, tuned j) of a screen cell in the map, if it shows one.
    pub fn cell_at(&self, h: &Heat, x: u16, y: u16) -> Option<(Option<usize>, usize)> {
        let p = ratatui::layout::Position::new(x, y);
        if !self.map.contains(p) {
            return None;
        }
        let j = self.col0 + (x - self.map.x) as usize;
        if j >= self.cols.min(h.cols) {
            return None;
        }
        // The marker line picks a column only.
        let line = (y - self.map.y) as usize;
        let i = line
            .checked_sub(1)
            .map(|l| self.row0 + l * self.per)
            .filter(|&i| i < h.rows);
        Some((i, j))
    }
}

/// The heatmap's view inside its pane's inner area, keeping the cursor (i, j) in view.
pub fn heat_view(app: &App, h: &Heat, inner: Rect, per: usize) -> HeatView {
    let [map, legend] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(inner);
    let (i, j) = (
        app.heatmap.cursor_i.min(h.rows.saturating_sub(1)),
        app.cursor_j.min(h.cols.saturating_sub(1)),
    );
    let cols = if app.zoom && app.focus == Pane::Heatmap {
        h.cols
    } else {
        app.heatmap.k.min(h.cols)
    };
    let width = map.width as usize;
    let col0 = if j >= width { j + 1 - width } else { 0 }.min(cols.saturating_sub(width.min(cols)));
    let visible_rows = map.height.saturating_sub(1) as usize * per;
    let row0 = if i >= visible_rows {
        (i + 1 - visible_rows).div_ceil(per) * per
    } else {
        0
    };
    HeatView {
        map,
        legend,
        col0,
        row0,
        cols,
        per,
    }
}

/// Rows a page key moves in a pane: its visible rows (at least 1).
pub fn page_rows(app: &App, pane: Pane) -> usize {
    let a = areas(app, app.size);
    let inner = |r: Option<Rect>, chrome: u16| r.map_or(10, |r| r.height.saturating_sub(chrome));
    let n = match pane {
        Pane::Layers | Pane::Spectrum => inner(a.layers, 2),
        Pane::Details => inner(a.details, 3),
        Pane::Heatmap => inner(a.heatmap, 4) * app.heatmap.rows_per_line as u16,
    };
    (n as usize).max(1)
}
