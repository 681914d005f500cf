//! The explorer's state and its pure update: keys and worker events in, commands out. Nothing
//! here touches the terminal, so tests drive it directly.

use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent, MouseButton, MouseEvent, MouseEventKind};
use regex::Regex;

use super::keys::{action_for, Action};
use crate::engine::MatrixReport;
use crate::spectral::rule::RuleKind;
use crate::spectral::{rule, Rule};

#[derive(Debug, Clone)]
pub enum Status {
    Queued,
    Computing(Instant),
    Done(Arc<MatrixReport>),
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub shape: (usize, usize),
    pub block: String,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Layers,
    Spectrum,
    Heatmap,
    Details,
}

const PANES: [Pane; 4] = [Pane::Layers, Pane::Spectrum, Pane::Heatmap, Pane::Details];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Main,
    Overview,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Name,
    Intruders,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Filter,
    Epsilon,
    K,
}

/// The repair dialog's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairForm {
    pub lambda: String,
    pub scope: crate::repair::Scope,
    pub format: crate::repair::Format,
    pub output: String,
    /// The field with the cursor: [`RepairForm::FIELDS`].
    pub field: usize,
    /// TUNED is an adapter (else only a merged model can be written).
    pub adapter: bool,
}

impl RepairForm {
    pub const FIELDS: [&'static str; 4] = ["λ", "scope", "format", "output"];

    pub fn new(output: String, adapter: bool) -> RepairForm {
        RepairForm {
            // The paper found 0.7–0.9 to keep accuracy while reducing forgetting.
            lambda: "0.8".into(),
            scope: crate::repair::Scope::Top,
            format: if adapter {
                crate::repair::Format::Adapter
            } else {
                crate::repair::Format::Merged
            },
            output,
            field: 0,
            adapter,
        }
    }

    /// The text field under the cursor, if it is one.
    fn text(&mut self) -> Option<&mut String> {
        match self.field {
            0 => Some(&mut self.lambda),
            3 => Some(&mut self.output),
            _ => None,
        }
    }

    fn choose(&mut self) {
        use crate::repair::{Format, Scope};
        match self.field {
            1 => {
                self.scope = match self.scope {
                    Scope::Top => Scope::All,
                    Scope::All => Scope::Top,
                }
            }
            2 if self.adapter => {
                self.format = match self.format {
                    Format::Adapter => Format::Merged,
                    Format::Merged => Format::Adapter,
                }
            }
            _ => {}
        }
    }

    /// The request, or what is wrong with the form.
    pub fn request(&self) -> Result<RepairRequest, String> {
        let lambda: f64 = self
            .lambda
            .trim()
            .parse()
            .map_err(|_| format!("λ: not a number: `{}`", self.lambda))?;
        crate::repair::check_lambda(lambda, false).map_err(|e| e.to_string())?;
        if self.output.trim().is_empty() {
            return Err("output: give a folder or a .safetensors file name".into());
        }
        Ok(RepairRequest {
            lambda,
            scope: self.scope,
            format: self.format,
            output: std::path::PathBuf::from(self.output.trim()),
        })
    }
}

/// A repair to run in the background.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairRequest {
    pub lambda: f64,
    pub scope: crate::repair::Scope,
    pub format: crate::repair::Format,
    pub output: std::path::PathBuf,
}

/// A finished repair, for its popup.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairOutcome {
    pub path: std::path::PathBuf,
    pub scaled: usize,
    pub matrices: usize,
    pub verification: crate::repair::Verification,
    pub notes: Vec<String>,
}

/// The repair view: the dialog's last values and the work under way.
#[derive(Debug, Clone, Default)]
pub struct RepairState {
    /// Kept between openings of the dialog.
    pub form: Option<RepairForm>,
    /// What the running repair is doing ("writing 40%").
    pub running: Option<String>,
    /// The default output (`<tuned>-repaired`) and whether TUNED is an adapter.
    pub default_output: String,
    pub adapter: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Popup {
    Help,
    /// The repair dialog.
    Repair(RepairForm),
    /// A repair's result: what it wrote and the verify table.
    Repaired(RepairOutcome),
    /// Choose the export format.
    Export,
    /// The selected matrix in every run ([`CompareState`]).
    Compare,
    Input {
        prompt: Prompt,
        text: String,
    },
}

/// |cos| of base vectors (rows, all of them) against the top tuned vectors (cols).
#[derive(Debug, Clone)]
pub struct Heat {
    pub row: usize,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Heat {
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.cols + j]
    }
}

/// What the event loop must do after an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    /// The selection changed: compute this matrix (and its heatmap) first.
    Focus(usize),
    SetPaused(bool),
    SaveState,
    /// Compute every singular value of this matrix's tuned weights.
    FullSpectrum(usize),
    /// Write a report of these matrices in this format.
    Export(crate::report::ReportFormat, Vec<String>),
    /// Repair the analysed matrices, write, verify.
    Repair(RepairRequest),
    /// Compute this many tuned vectors per matrix from now on, every matrix again, as
    /// [`App::epoch`] (the user asked for a k above [`App::keep`]).
    Recompute {
        keep: usize,
        epoch: u64,
    },
    Suspend,
    /// Capture the mouse, or give it back to the terminal.
    SetMouse(bool),
    /// Show another run (its index), keeping the matrix, vector and rule.
    SwitchRun(usize),
    /// Compute this matrix in every run, for the compare view.
    Compare(String),
    Quit,
}

/// The runs being explored (`lorascope BASE RUN1 RUN2 …`): their labels, which is shown, and
/// what each loaded run has found so far under the shown run's rule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunBar {
    pub labels: Vec<String>,
    pub active: usize,
    /// (intruders, matrices done, matrices) of each run loaded so far.
    pub totals: Vec<Option<(usize, usize, usize)>>,
}

/// The compare view: one matrix in every run, matched against the shown run's vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareState {
    pub matrix: String,
    /// The run whose vectors are followed (the one shown when the view opened).
    pub from: usize,
    /// Per run, once computed: its label and the matrix there, or why it is missing.
    pub rows: Option<Vec<(String, Result<crate::compare::Across, String>)>>,
}

pub use crate::flags::UserState;

/// `bert.encoder.layer.3.attention.self.query.weight` → `L3 attention.self.query`.
pub fn short_name(name: &str, block: &str) -> String {
    let rest = name
        .strip_prefix(block)
        .map(|r| r.trim_start_matches('.'))
        .unwrap_or(name);
    let rest = rest.strip_suffix(".weight").unwrap_or(rest);
    // The list is narrow; the spectrum title shows the full name.
    let rest = rest
        .replace("self_attn.", "attn.")
        .replace("attention.", "attn.")
        .replace("intermediate.", "inter.");
    match block.rsplit('.').next() {
        Some(n) if !block.is_empty() => format!("L{n} {rest}"),
        _ => rest,
    }
}

/// The matrix list: which rows are shown, in what order, and the one selected.
pub struct ListState {
    /// Indices into `App::rows` after filter and sort.
    pub visible: Vec<usize>,
    /// Position in `visible`.
    pub sel: usize,
    pub filter: Option<(String, Regex)>,
    pub sort: SortBy,
}

/// The heatmap of the selected matrix.
pub struct HeatmapState {
    /// Base vector under the cursor (the tuned one is [`App::cursor_j`], shared with the
    /// spectrum and the table).
    pub cursor_i: usize,
    /// Tuned vectors shown (10 … 200).
    pub k: usize,
    pub heat: Option<Heat>,
    /// Why the heatmap of this row could not be made.
    pub error: Option<(usize, String)>,
    /// Heatmap rows per terminal line: 2 in colour, 1 without.
    pub rows_per_line: usize,
}

/// The spectrum pane: whole tuned spectra computed on request (scans keep the top part).
#[derive(Default)]
pub struct SpectrumState {
    /// By row.
    pub full: std::collections::HashMap<usize, Vec<f64>>,
    /// Rows whose whole spectrum is being computed, since when.
    pub pending: std::collections::HashMap<usize, Instant>,
    /// Show the whole spectrum where there is one.
    pub show_full: bool,
}

/// The help popup.
#[derive(Default)]
pub struct HelpState {
    /// First line shown where it scrolls (a screen too small for all of it).
    pub scroll: usize,
}

impl ListState {
    /// The row selected, if any is shown.
    pub fn selected(&self) -> Option<usize> {
        self.visible.get(self.sel).copied()
    }

    /// Filter and sort `rows` again (by `intruders`, one count per row), keeping the selected
    /// row selected where it is still shown.
    pub fn refresh(&mut self, rows: &[Row], intruders: &[usize]) {
        let keep = self.selected();
        let mut v: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                self.filter
                    .as_ref()
                    .is_none_or(|(_, re)| re.is_match(&rows[i].name))
            })
            .collect();
        if self.sort == SortBy::Intruders {
            v.sort_by_key(|&i| std::cmp::Reverse(intruders[i]));
        }
        self.visible = v;
        self.sel = keep
            .and_then(|k| self.visible.iter().position(|&i| i == k))
            .unwrap_or(0)
            .min(self.visible.len().saturating_sub(1));
    }
}

impl HeatmapState {
    /// The heatmap of `row`, if it is the one held.
    pub fn of(&self, row: Option<usize>) -> Option<&Heat> {
        self.heat.as_ref().filter(|h| Some(h.row) == row)
    }

    /// Why the heatmap of `row` could not be made, if it could not.
    pub fn error_of(&self, row: Option<usize>) -> Option<&str> {
        self.error
            .as_ref()
            .filter(|(r, _)| Some(*r) == row)
            .map(|(_, e)| e.as_str())
    }

    /// A computed heatmap: kept if it is the selected row's (`selected`), and it clears an
    /// earlier failure of its row.
    pub fn on_heat(&mut self, heat: Heat, selected: Option<usize>) {
        if self.error.as_ref().is_some_and(|(r, _)| *r == heat.row) {
            self.error = None;
        }
        if selected == Some(heat.row) {
            self.cursor_i = self.cursor_i.min(heat.rows.saturating_sub(1));
            self.heat = Some(heat);
        }
    }
}

impl SpectrumState {
    /// The whole spectrum of `row`, where there is one and it is to be shown.
    pub fn shown(&self, row: Option<usize>) -> Option<&[f64]> {
        self.full
            .get(&row?)
            .filter(|_| self.show_full)
            .map(|v| v.as_slice())
    }
}

impl HelpState {
    /// Scroll by `delta` lines, no further than the last of `lines` can be shown on a screen
    /// `height` rows high (the help's border takes two).
    pub fn scroll_by(&mut self, delta: isize, lines: usize, height: u16) {
        let most = lines.saturating_sub(height.saturating_sub(2) as usize);
        self.scroll = self.scroll.saturating_add_signed(delta).min(most);
    }
}

/// The explorer's state: what is shared (rows, rule, flags, cursor) and each view's own.
pub struct App {
    pub rows: Vec<Row>,
    pub list: ListState,
    pub heatmap: HeatmapState,
    pub spectrum: SpectrumState,
    pub help: HelpState,
    pub repair: RepairState,
    /// k and ε, changed live.
    pub rule: Rule,
    /// Tuned vectors the engine computes per matrix: a larger k recomputes every matrix.
    pub keep: usize,
    /// Bumped by each recomputation: results the workers started before it are stale.
    pub epoch: u64,
    pub focus: Pane,
    pub zoom: bool,
    pub tab: Tab,
    pub popup: Option<Popup>,
    /// Tuned vector under the cursor (heatmap column, details row, spectrum bar).
    pub cursor_j: usize,
    pub user: UserState,
    pub paused: bool,
    pub message: Option<String>,
    /// One line describing the inputs, for the title and overview.
    pub title: String,
    pub inputs: Vec<String>,
    pub started: Instant,
    pub quit: bool,
    /// The screen's size, for paging and the mouse (see [`super::layout`]).
    pub size: ratatui::layout::Rect,
    /// Whether the mouse is captured (off: the terminal selects text).
    pub mouse: bool,
    /// The flags file's content, kept up to date; the event loop writes it.
    pub stored: crate::flags::Stored,
    /// Stale flags were mentioned once already.
    pub stale_noted: bool,
    /// Several runs: the run bar (None with one run).
    pub runs: Option<RunBar>,
    pub compare: Option<CompareState>,
}

/// What `f` says on a vector with σ ≈ 0 ([`MatrixReport::is_testable`]).
const UNTESTABLE: &str = "σ ≈ 0: this vector is arbitrary (a null-space direction), not tested";
/// What run keys say when there is one run.
const ONE_RUN: &str = "one run: to compare, give several (lorascope BASE RUN1 RUN2 …)";

pub const HEAT_MIN: usize = 10;
pub const HEAT_MAX: usize = 200;

impl App {
    pub fn new(
        rows: Vec<Row>,
        title: String,
        inputs: Vec<String>,
        rule: Rule,
        keep: usize,
        user: UserState,
    ) -> App {
        let mut app = App {
            list: ListState {
                visible: (0..rows.len()).collect(),
                sel: 0,
                filter: None,
                sort: SortBy::Name,
            },
            heatmap: HeatmapState {
                cursor_i: 0,
                // Every tuned vector computed, as far as the width allows (`<` narrows).
                k: keep.clamp(HEAT_MIN, HEAT_MAX),
                heat: None,
                error: None,
                rows_per_line: 2,
            },
            spectrum: SpectrumState::default(),
            help: HelpState::default(),
            repair: RepairState::default(),
            rows,
            rule,
            keep,
            epoch: 0,
            focus: Pane::Layers,
            zoom: false,
            tab: Tab::Main,
            popup: None,
            cursor_j: 0,
            user,
            paused: false,
            message: None,
            title,
            inputs,
            started: Instant::now(),
            quit: false,
            size: ratatui::layout::Rect::new(0, 0, 80, 24),
            mouse: false,
            stored: Default::default(),
            stale_noted: false,
            runs: None,
            compare: None,
        };
        app.refresh_visible();
        app
    }

    pub fn selected_row(&self) -> Option<usize> {
        self.list.selected()
    }

    pub fn report(&self, row: usize) -> Option<&Arc<MatrixReport>> {
        match &self.rows[row].status {
            Status::Done(r) => Some(r),
            _ => None,
        }
    }

    pub fn selected_report(&self) -> Option<&Arc<MatrixReport>> {
        self.report(self.selected_row()?)
    }

    /// The user's verdict on vector j of a matrix, if any.
    pub fn flag(&self, name: &str, j: usize) -> Option<bool> {
        self.user.flag(name, j)
    }

    /// The rule's verdict on tuned vector j of `r`, overridden by the user's flag where there
    /// is one; a vector with σ ≈ 0 is never one.
    pub fn is_intruder(&self, name: &str, r: &MatrixReport, j: usize) -> bool {
        r.is_testable(j)
            && self
                .user
                .verdict(name, j, r.vectors[j].c(&self.rule), &self.rule)
    }

    /// Intruders of a matrix under the current k and ε and the user's flags.
    pub fn intruders(&self, row: usize) -> Option<Vec<usize>> {
        let r = self.report(row)?;
        Some(
            self.user
                .intruders(&self.rows[row].name, &r.cos(&self.rule), &self.rule),
        )
    }

    pub fn total_intruders(&self) -> usize {
        self.total_under(&self.rule)
    }

    /// Intruders found so far under another rule (the run bar counts every run by the shown
    /// run's k and ε), with this run's flags.
    pub fn total_under(&self, rule: &Rule) -> usize {
        (0..self.rows.len())
            .filter_map(|r| {
                let rep = self.report(r)?;
                Some(
                    self.user
                        .intruders(&self.rows[r].name, &rep.cos(rule), rule)
                        .len(),
                )
            })
            .sum()
    }

    pub fn overrides(&self) -> usize {
        self.user.overrides()
    }

    pub fn done(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r.status, Status::Done(_) | Status::Failed(_)))
            .count()
    }

    /// Remaining time from the average so far (None before the first result).
    pub fn eta(&self) -> Option<Duration> {
        let done = self.done();
        let left = self.rows.len() - done;
        (done > 0 && left > 0).then(|| self.started.elapsed() / done as u32 * left as u32)
    }

    /// Totals at each ε of the sweep from the stored c_j (rule only, no flags).
    pub fn curve(&self) -> Vec<(f64, usize)> {
        self.curve_of(self.rule.kind())
    }

    /// [`App::curve`] with the current k under the rule of `kind`.
    pub fn curve_of(&self, kind: RuleKind) -> Vec<(f64, usize)> {
        self.rule
            .with_kind(kind)
            .sweep()
            .map(|r| {
                let n = (0..self.rows.len())
                    .filter_map(|i| self.report(i))
                    .map(|m| r.count(&m.cos(&r)))
                    .sum();
                (r.epsilon(), n)
            })
            .collect()
    }

    /// Per block, intruders under the current settings (blocks not analysed yet count 0).
    pub fn per_block(&self) -> Vec<(String, usize)> {
        rule::per_block(self.rows.iter().enumerate().map(|(i, row)| {
            let block = Some(row.block.as_str()).filter(|b| !b.is_empty());
            (block, self.intruders(i).map_or(0, |v| v.len()))
        }))
    }

    fn refresh_visible(&mut self) {
        let counts: Vec<usize> = (0..self.rows.len())
            .map(|i| self.intruders(i).map_or(0, |x| x.len()))
            .collect();
        self.list.refresh(&self.rows, &counts);
    }

    fn max_j(&self) -> usize {
        self.selected_report()
            .map_or(0, |r| r.vectors.len().saturating_sub(1))
    }

    fn select(&mut self, pos: usize, cmds: &mut Vec<Cmd>) {
        let before = self.selected_row();
        self.list.sel = pos.min(self.list.visible.len().saturating_sub(1));
        if self.selected_row() != before {
            self.cursor_j = 0;
            self.heatmap.cursor_i = 0;
            if let Some(r) = self.selected_row() {
                if self.heatmap.heat.as_ref().is_some_and(|h| h.row != r) {
                    self.heatmap.heat = None;
                }
                cmds.push(Cmd::Focus(r));
            }
        }
    }

    /// Up or down by `delta` rows in a pane: matrices in the list (and the spectrum), tuned
    /// vectors in the table, base vectors in the heatmap.
    fn move_by(&mut self, pane: Pane, delta: isize, cmds: &mut Vec<Cmd>) {
        let mv = |x: usize, max: usize| {
            (x as isize).saturating_add(delta).clamp(0, max as isize) as usize
        };
        match pane {
            Pane::Layers | Pane::Spectrum => {
                let pos = mv(self.list.sel, self.list.visible.len().saturating_sub(1));
                self.select(pos, cmds);
            }
            Pane::Details => self.cursor_j = mv(self.cursor_j, self.max_j()),
            Pane::Heatmap => {
                let max = self
                    .heatmap
                    .heat
                    .as_ref()
                    .map_or(0, |h| h.rows.saturating_sub(1));
                self.heatmap.cursor_i = mv(self.heatmap.cursor_i, max);
            }
        }
    }

    /// A click selects what is under it (a matrix, a tuned vector's column or row) and focuses
    /// its pane; the wheel scrolls the pane under the pointer.
    pub fn on_mouse(&mut self, ev: MouseEvent) -> Vec<Cmd> {
        let mut cmds = Vec::new();
        if self.popup.is_some() || self.tab != Tab::Main {
            return cmds;
        }
        let areas = super::layout::areas(self, self.size);
        let Some(pane) = areas.pane_at(ev.column, ev.row) else {
            return cmds;
        };
        let area = areas.of(pane).unwrap_or_default();
        match ev.kind {
            MouseEventKind::ScrollDown => self.move_by(pane, 3, &mut cmds),
            MouseEventKind::ScrollUp => self.move_by(pane, -3, &mut cmds),
            MouseEventKind::Down(MouseButton::Left) => {
                self.message = None;
                self.focus = pane;
                // Rows below the border (and the table's header).
                let line = |skip: u16| ev.row.checked_sub(area.y + skip).map(|l| l as usize);
                match pane {
                    Pane::Layers => {
                        let h = area.height.saturating_sub(2) as usize;
                        let offset =
                            super::layout::list_offset(self.list.sel, self.list.visible.len(), h);
                        if let Some(l) = line(1).filter(|&l| l < h) {
                            if offset + l < self.list.visible.len() {
                                self.select(offset + l, &mut cmds);
                            }
                        }
                    }
                    Pane::Details => {
                        let h = area.height.saturating_sub(3) as usize;
                        let offset = super::layout::details_offset(self.cursor_j, h);
                        if let Some(l) = line(2).filter(|&l| l < h) {
                            self.cursor_j = (offset + l).min(self.max_j());
                        }
                    }
                    Pane::Heatmap => {
                        if let Some(h) = self.heatmap.heat.clone() {
                            let inner = ratatui::widgets::Block::bordered().inner(area);
                            let v = super::layout::heat_view(
                                self,
                                &h,
                                inner,
                                self.heatmap.rows_per_line,
                            );
                            if let Some((i, j)) = v.cell_at(&h, ev.column, ev.row) {
                                self.cursor_j = j.min(self.max_j());
                                if let Some(i) = i {
                                    self.heatmap.cursor_i = i;
                                }
                            }
                        }
                    }
                    Pane::Spectrum => {}
                }
            }
            _ => {}
        }
        cmds
    }

    fn jump_intruder(&mut self, forward: bool, cmds: &mut Vec<Cmd>) {
        let n = self.list.visible.len();
        for step in 1..=n {
            let pos = if forward {
                (self.list.sel + step) % n
            } else {
                (self.list.sel + n - step % n) % n
            };
            if self
                .intruders(self.list.visible[pos])
                .is_some_and(|v| !v.is_empty())
            {
                self.select(pos, cmds);
                return;
            }
        }
        self.message = Some("no matrix with intruders (yet)".into());
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Cmd> {
        let mut cmds = Vec::new();
        self.message = None;
        if let Some(Popup::Input { prompt, text }) = &mut self.popup {
            use super::keys::PromptAction;
            let ctrl = key
                .modifiers
                .contains(ratatui::crossterm::event::KeyModifiers::CONTROL);
            match (super::keys::prompt_action(key.code), key.code) {
                (Some(PromptAction::Submit), _) => {
                    let (prompt, text) = (prompt.clone(), text.clone());
                    self.popup = None;
                    self.submit(prompt, &text, &mut cmds);
                }
                (Some(PromptAction::Cancel), _) => self.popup = None,
                (Some(PromptAction::Delete), _) => {
                    text.pop();
                }
                // Ctrl-C quits from anywhere.
                (None, KeyCode::Char('c')) if ctrl => {
                    self.quit = true;
                    cmds.push(Cmd::Quit);
                }
                (None, KeyCode::Char(c)) if !ctrl => text.push(c),
                _ => {}
            }
            return cmds;
        }
        if let Some(Popup::Repaired(_)) = &self.popup {
            self.popup = None;
            return cmds;
        }
        if let Some(Popup::Repair(form)) = &mut self.popup {
            use super::keys::FormAction;
            let ctrl = key
                .modifiers
                .contains(ratatui::crossterm::event::KeyModifiers::CONTROL);
            match (super::keys::form_action(key.code), key.code) {
                (Some(FormAction::Run), _) => match form.request() {
                    Ok(req) => {
                        self.repair.form = Some(form.clone());
                        self.popup = None;
                        self.repair.running = Some("starting".into());
                        cmds.push(Cmd::Repair(req));
                    }
                    Err(e) => self.message = Some(e),
                },
                (Some(FormAction::Cancel), _) => {
                    self.repair.form = Some(form.clone());
                    self.popup = None;
                }
                (Some(FormAction::Next), _) => {
                    form.field = (form.field + 1) % RepairForm::FIELDS.len()
                }
                (Some(FormAction::Prev), _) => {
                    form.field =
                        (form.field + RepairForm::FIELDS.len() - 1) % RepairForm::FIELDS.len()
                }
                (Some(FormAction::Choose), _) => form.choose(),
                (Some(FormAction::Delete), _) => {
                    if let Some(t) = form.text() {
                        t.pop();
                    }
                }
                (None, KeyCode::Char('c')) if ctrl => {
                    self.quit = true;
                    cmds.push(Cmd::Quit);
                }
                (None, KeyCode::Char(' ')) if form.text().is_none() => form.choose(),
                (None, KeyCode::Char(c)) if !ctrl => {
                    if let Some(t) = form.text() {
                        t.push(c);
                    }
                }
                _ => {}
            }
            return cmds;
        }
        if self.popup == Some(Popup::Compare) {
            // ← → follow another vector; any other key closes (Ctrl-C still quits).
            match action_for(&key) {
                Some(Action::Left) => self.cursor_j = self.cursor_j.saturating_sub(1),
                Some(Action::Right) => self.cursor_j = (self.cursor_j + 1).min(self.max_j()),
                Some(Action::Quit)
                    if key
                        .modifiers
                        .contains(ratatui::crossterm::event::KeyModifiers::CONTROL) =>
                {
                    self.quit = true;
                    cmds.push(Cmd::Quit);
                }
                _ => {
                    self.popup = None;
                    self.compare = None;
                }
            }
            return cmds;
        }
        if self.popup == Some(Popup::Export) {
            self.popup = None;
            let chosen = super::keys::EXPORT_KEYS
                .iter()
                .find(|(c, ..)| key.code == KeyCode::Char(*c));
            if let Some((_, format, _)) = chosen {
                cmds.push(Cmd::Export(*format, self.export_set()));
            }
            return cmds;
        }
        let action = action_for(&key);
        if self.popup == Some(Popup::Help) {
            // Moving keys scroll it where it does not fit; any other key closes it. Ctrl-C
            // still quits and Ctrl-Z still suspends.
            let ctrl = key
                .modifiers
                .contains(ratatui::crossterm::event::KeyModifiers::CONTROL);
            let scroll = super::keys::HELP_SCROLL
                .iter()
                .find(|(a, _)| Some(*a) == action);
            match (scroll, action) {
                (Some((_, by)), _) => {
                    self.help
                        .scroll_by(*by, super::keys::BINDINGS.len(), self.size.height)
                }
                (None, Some(Action::Quit | Action::Suspend)) if ctrl => {}
                _ => {
                    self.popup = None;
                    return cmds;
                }
            }
            if self.popup.is_some() && !ctrl {
                return cmds;
            }
        }
        let Some(action) = action else {
            return cmds;
        };
        let page = super::layout::page_rows(self, self.focus) as isize;
        match action {
            Action::Quit => {
                self.quit = true;
                cmds.push(Cmd::Quit);
            }
            // One level back; quitting is q's (Esc pressed once too often must not leave).
            Action::Back => {
                if self.zoom {
                    self.zoom = false;
                } else if self.tab == Tab::Overview {
                    self.tab = Tab::Main;
                } else if self.list.filter.is_some() {
                    self.list.filter = None;
                    self.refresh_visible();
                } else {
                    self.message = Some("q quits".into());
                }
            }
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom => {
                let delta: isize = match action {
                    Action::Up => -1,
                    Action::Down => 1,
                    Action::PageUp => -page,
                    Action::PageDown => page,
                    Action::Top => isize::MIN / 2,
                    _ => isize::MAX / 2,
                };
                self.move_by(self.focus, delta, &mut cmds);
            }
            Action::Left => self.cursor_j = self.cursor_j.saturating_sub(1),
            Action::Right => self.cursor_j = (self.cursor_j + 1).min(self.max_j()),
            Action::NextPane | Action::PrevPane => {
                let i = PANES.iter().position(|p| *p == self.focus).unwrap();
                let n = PANES.len();
                self.focus = PANES[if action == Action::NextPane {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                }];
            }
            Action::Zoom => self.zoom = !self.zoom,
            Action::SwitchRun | Action::NextRun => {
                let n = self.runs.as_ref().map_or(1, |b| b.labels.len());
                let active = self.runs.as_ref().map_or(0, |b| b.active);
                let to = match key.code {
                    KeyCode::Char(d) if action == Action::SwitchRun => {
                        d.to_digit(10).map_or(0, |d| d as usize).saturating_sub(1)
                    }
                    _ => (active + 1) % n,
                };
                if n < 2 {
                    self.message = Some(ONE_RUN.into());
                } else if to >= n {
                    self.message = Some(format!("no run {} (runs 1–{n})", to + 1));
                } else if to != active {
                    cmds.push(Cmd::SwitchRun(to));
                }
            }
            Action::Compare => match (&self.runs, self.selected_row()) {
                (None, _) => self.message = Some(ONE_RUN.into()),
                (Some(_), None) => self.message = Some("no matrix selected".into()),
                (Some(bar), Some(row)) => {
                    let matrix = self.rows[row].name.clone();
                    self.compare = Some(CompareState {
                        matrix: matrix.clone(),
                        from: bar.active,
                        rows: None,
                    });
                    self.popup = Some(Popup::Compare);
                    cmds.push(Cmd::Compare(matrix));
                }
            },
            Action::Overview => {
                self.tab = if self.tab == Tab::Main {
                    Tab::Overview
                } else {
                    Tab::Main
                };
            }
            Action::Help => {
                self.popup = Some(Popup::Help);
                self.help.scroll = 0;
            }
            Action::Filter => {
                let text = self
                    .list
                    .filter
                    .as_ref()
                    .map(|f| f.0.clone())
                    .unwrap_or_default();
                self.popup = Some(Popup::Input {
                    prompt: Prompt::Filter,
                    text,
                });
            }
            Action::NextIntruder => self.jump_intruder(true, &mut cmds),
            Action::PrevIntruder => self.jump_intruder(false, &mut cmds),
            Action::Sort => {
                self.list.sort = if self.list.sort == SortBy::Name {
                    SortBy::Intruders
                } else {
                    SortBy::Name
                };
                self.refresh_visible();
            }
            Action::EpsDown | Action::EpsUp => {
                let d = if action == Action::EpsUp { 0.05 } else { -0.05 };
                // Steps of 0.05 within (0, 1]: from 0.05 a step down stays.
                let e = ((self.rule.epsilon() + d) * 100.0)
                    .round()
                    .clamp(5.0, 100.0)
                    / 100.0;
                self.rule = self.rule.with_epsilon(e).unwrap_or(self.rule);
                self.refresh_visible();
            }
            Action::EpsInput => {
                self.popup = Some(Popup::Input {
                    prompt: Prompt::Epsilon,
                    text: format!("{}", self.rule.epsilon()),
                })
            }
            Action::RuleKind => {
                let kind = match self.rule.kind() {
                    RuleKind::Paper => RuleKind::DegenerateAware,
                    RuleKind::DegenerateAware => RuleKind::Paper,
                };
                self.rule = self.rule.with_kind(kind);
                self.message = Some(format!("rule: {}", kind.name()));
                self.refresh_visible();
            }
            Action::KInput => {
                self.popup = Some(Popup::Input {
                    prompt: Prompt::K,
                    text: format!("{}", self.rule.k()),
                })
            }
            Action::HeatSmaller => self.heatmap.k = (self.heatmap.k * 2 / 3).max(HEAT_MIN),
            Action::HeatLarger => {
                // No wider than the tuned vectors computed, so that `<` narrows at once.
                let most = self.keep.clamp(HEAT_MIN, HEAT_MAX);
                if self.heatmap.k >= most {
                    self.message = Some(if most == HEAT_MAX {
                        format!("the heatmap shows at most {HEAT_MAX} tuned vectors")
                    } else {
                        format!("all {most} tuned vectors computed are shown; a k above {most} (K) computes more")
                    });
                }
                self.heatmap.k = (self.heatmap.k * 3 / 2).min(most);
            }
            Action::Flag => {
                if let (Some(row), Some(r)) = (self.selected_row(), self.selected_report().cloned())
                {
                    let name = self.rows[row].name.clone();
                    if !r.is_testable(self.cursor_j) && self.cursor_j < r.vectors.len() {
                        self.message = Some(UNTESTABLE.to_string());
                    } else if let Some(v) = r.vectors.get(self.cursor_j) {
                        let rule_says = self.rule.is_intruder_at(self.cursor_j, v.c(&self.rule));
                        let now = !self.is_intruder(&name, &r, self.cursor_j);
                        let entry = self.user.flags.entry(name.clone()).or_default();
                        if now == rule_says {
                            entry.remove(&self.cursor_j); // back to the rule's verdict
                        } else {
                            entry.insert(self.cursor_j, now);
                        }
                        if entry.is_empty() {
                            self.user.flags.remove(&name);
                        }
                        self.stored.record(&self.user, &name, r.weights);
                        // Short: the status bar keeps its right end for `? help  q quit`.
                        self.message = Some(format!(
                            "vector {} of {}: {}",
                            self.cursor_j,
                            short_name(&name, &self.rows[row].block),
                            if now { "intruder" } else { "not an intruder" }
                        ));
                        cmds.push(Cmd::SaveState);
                    }
                }
            }
            Action::Mark => {
                if let Some(row) = self.selected_row() {
                    let name = self.rows[row].name.clone();
                    if !self.user.marks.remove(&name) {
                        self.user.marks.insert(name.clone());
                    }
                    // Persisted with the weights once analysed (see `on_done`).
                    if let Some(r) = self.report(row) {
                        let w = r.weights;
                        self.stored.record(&self.user, &name, w);
                    }
                    cmds.push(Cmd::SaveState);
                }
            }
            Action::Pause => {
                self.paused = !self.paused;
                cmds.push(Cmd::SetPaused(self.paused));
            }
            Action::Suspend => cmds.push(Cmd::Suspend),
            Action::Repair => {
                let left = self.rows.len() - self.done();
                if self.repair.running.is_some() {
                    self.message = Some("a repair is running".into());
                } else if left > 0 {
                    self.message = Some(format!(
                        "{} still being analysed: repair when every matrix is done",
                        crate::report::count(left, "matrix", "matrices")
                    ));
                } else {
                    let form = self.repair.form.clone().unwrap_or_else(|| {
                        RepairForm::new(self.repair.default_output.clone(), self.repair.adapter)
                    });
                    self.popup = Some(Popup::Repair(form));
                }
            }
            Action::Mouse => {
                self.mouse = !self.mouse;
                self.message = Some(if self.mouse {
                    "mouse on: click to select, wheel to scroll (m: off)".into()
                } else {
                    "mouse off: the terminal selects text (m: on)".into()
                });
                cmds.push(Cmd::SetMouse(self.mouse));
            }
            Action::FullSpectrum => self.toggle_full_spectrum(&mut cmds),
            Action::Export => {
                if self.export_set().is_empty() {
                    self.message =
                        Some("nothing to export yet: no analysed matrix marked or selected".into());
                } else {
                    self.popup = Some(Popup::Export);
                }
            }
        }
        cmds
    }

    fn submit(&mut self, prompt: Prompt, text: &str, cmds: &mut Vec<Cmd>) {
        match prompt {
            Prompt::Filter => {
                if text.is_empty() {
                    self.list.filter = None;
                } else {
                    match Regex::new(text) {
                        Ok(re) => self.list.filter = Some((text.to_string(), re)),
                        Err(_) => self.message = Some(format!("not a valid regex: {text}")),
                    }
                }
                let before = self.selected_row();
                self.refresh_visible();
                if self.selected_row() != before {
                    if let Some(r) = self.selected_row() {
                        cmds.push(Cmd::Focus(r));
                    }
                }
                if self.list.visible.is_empty() {
                    self.message = Some("no matrix matches the filter".into());
                }
            }
            Prompt::Epsilon | Prompt::K => {
                let parsed = match prompt {
                    Prompt::Epsilon => text
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .map(|e| self.rule.with_epsilon(e)),
                    _ => text
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .map(|k| self.rule.with_k(k)),
                };
                match parsed.unwrap_or_else(|| Err(format!("not a number: `{text}`"))) {
                    Ok(rule) => self.set_rule(rule, cmds),
                    Err(m) => self.message = Some(m),
                }
            }
        }
    }

    /// Where the user is, to be found again next time.
    pub fn view(&self) -> Option<crate::flags::View> {
        let row = self.selected_row()?;
        Some(crate::flags::View {
            matrix: self.rows[row].name.clone(),
            vector: self.cursor_j,
            zoom: self.zoom,
            pane: format!("{:?}", self.focus),
        })
    }

    /// Back where the user was: the matrix (if it is still there), vector, pane and zoom.
    pub fn restore_view(&mut self, v: &crate::flags::View) {
        let Some(row) = self.rows.iter().position(|r| r.name == v.matrix) else {
            return;
        };
        let Some(pos) = self.list.visible.iter().position(|&i| i == row) else {
            return;
        };
        self.list.sel = pos;
        self.cursor_j = v.vector;
        self.focus = PANES
            .into_iter()
            .find(|p| format!("{p:?}") == v.pane)
            .unwrap_or(Pane::Layers);
        self.zoom = v.zoom;
    }

    /// The marked matrices that are analysed, or else the selected one.
    pub fn export_set(&self) -> Vec<String> {
        let marked: Vec<String> = self
            .rows
            .iter()
            .enumerate()
            .filter(|(i, r)| self.user.marks.contains(&r.name) && self.report(*i).is_some())
            .map(|(_, r)| r.name.clone())
            .collect();
        if !marked.is_empty() {
            return marked;
        }
        self.selected_row()
            .filter(|&r| self.report(r).is_some())
            .map(|r| vec![self.rows[r].name.clone()])
            .unwrap_or_default()
    }

    /// The analysed matrices as a scan, for reports.
    pub fn as_scan(&self) -> crate::engine::Scan {
        crate::engine::Scan {
            results: self
                .rows
                .iter()
                .filter_map(|r| match &r.status {
                    Status::Done(m) => Some((r.name.clone(), Ok(m.as_ref().clone()))),
                    Status::Failed(e) => Some((r.name.clone(), Err(e.clone()))),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Every matrix again with `keep` tuned vectors: the reports so far hold too few for the k
    /// asked. Whole spectra and flags do not depend on it and stay.
    /// Count by this rule from now on (another run's, when the user switches runs); a k above
    /// the vectors computed recomputes every matrix.
    pub fn set_rule(&mut self, rule: Rule, cmds: &mut Vec<Cmd>) {
        self.rule = rule;
        if rule.k() > self.keep {
            self.recompute(rule.k(), cmds);
        }
        self.refresh_visible();
    }

    fn recompute(&mut self, keep: usize, cmds: &mut Vec<Cmd>) {
        self.message = Some(format!(
            "k = {keep} is above the {} tuned vectors computed: computing {keep} for every matrix",
            self.keep
        ));
        self.keep = keep;
        self.epoch += 1;
        for r in &mut self.rows {
            r.status = Status::Queued;
        }
        self.heatmap.heat = None;
        self.heatmap.error = None;
        self.started = Instant::now();
        cmds.push(Cmd::Recompute {
            keep,
            epoch: self.epoch,
        });
    }

    pub fn on_started(&mut self, row: usize) {
        self.rows[row].status = Status::Computing(Instant::now());
    }

    pub fn on_done(&mut self, row: usize, result: Result<Arc<MatrixReport>, String>) {
        if let Ok(r) = &result {
            // The stored flags of these weights, and what was set here before they were known.
            let name = self.rows[row].name.clone();
            self.stored.apply(&mut self.user, &name, r.weights);
            self.stored.record(&self.user, &name, r.weights);
            if !self.stale_noted && self.stored.stale([(name.as_str(), r.weights)]) > 0 {
                self.stale_noted = true;
                self.message = Some(format!(
                    "flags stored for {} belong to other weights (another run, or a changed \
                     config): not applied",
                    short_name(&name, &self.rows[row].block)
                ));
            }
        }
        self.rows[row].status = match result {
            Ok(r) => Status::Done(r),
            Err(e) => Status::Failed(e),
        };
        if self.list.sort == SortBy::Intruders {
            self.refresh_visible();
        }
    }

    /// The whole tuned spectrum of the selected matrix: shown if computed (F again: the top
    /// part), else asked for. Large matrices cost a values-only SVD, so only on request.
    fn toggle_full_spectrum(&mut self, cmds: &mut Vec<Cmd>) {
        let Some(row) = self.selected_row() else {
            return;
        };
        let Some(r) = self.report(row) else {
            self.message = Some("not analysed yet".into());
            return;
        };
        let name = self.rows[row].name.clone();
        if r.has_whole_spectrum() {
            self.message = Some(format!("{name}: the whole spectrum is already shown"));
        } else if self.spectrum.full.contains_key(&row) {
            self.spectrum.show_full = !self.spectrum.show_full;
        } else {
            match self.spectrum.pending.entry(row) {
                Entry::Occupied(_) => {
                    self.message = Some(format!("{name}: still computing the whole spectrum"))
                }
                Entry::Vacant(v) => {
                    v.insert(Instant::now());
                    self.spectrum.show_full = true;
                    cmds.push(Cmd::FullSpectrum(row));
                }
            }
        }
    }

    pub fn on_spectrum(&mut self, row: usize, result: Result<Vec<f64>, String>) {
        self.spectrum.pending.remove(&row);
        let name = &self.rows[row].name;
        match result {
            Ok(s) => {
                self.message = Some(format!("{name}: {} singular values", s.len()));
                self.spectrum.full.insert(row, s);
            }
            Err(e) => self.message = Some(format!("{name}: whole spectrum failed: {e}")),
        }
    }

    /// Progress of the running repair.
    pub fn on_repair_progress(&mut self, what: String) {
        self.repair.running = Some(what);
    }

    /// The compare view's matrix computed in every run (a late answer for another is dropped).
    pub fn on_compared(
        &mut self,
        matrix: &str,
        rows: Vec<(String, Result<crate::compare::Across, String>)>,
    ) {
        if let Some(c) = self.compare.as_mut().filter(|c| c.matrix == matrix) {
            c.rows = Some(rows);
        }
    }

    pub fn on_repaired(&mut self, result: Result<RepairOutcome, String>) {
        self.repair.running = None;
        match result {
            Ok(o) => self.popup = Some(Popup::Repaired(o)),
            Err(e) => self.message = Some(format!("repair failed: {e}")),
        }
    }

    pub fn on_heat_error(&mut self, row: usize, error: String) {
        self.heatmap.error = Some((row, error));
    }

    pub fn on_heat(&mut self, heat: Heat) {
        let selected = self.selected_row();
        self.heatmap.on_heat(heat, selected);
    }
}
