//! The interactive explorer: a thin face over [`crate::engine`]. `app` holds state and its pure
//! update, `ui` draws it, `worker` computes in the background, `keys` is the key table.

pub mod app;
pub mod keys;
pub mod layout;
pub mod theme;
pub mod ui;
pub mod worker;

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use ratatui::crossterm::event::{self, KeyEvent, KeyEventKind};

use crate::checkpoint::{block_of, Tuned};
use crate::engine::{Engine, MatrixReport};
use crate::error::{Error, Result};
use app::{App, Cmd, Heat, Row, Status, UserState};
use theme::{Depth, Theme};

pub enum Event {
    Key(KeyEvent),
    Mouse(ratatui::crossterm::event::MouseEvent),
    /// The terminal's new size.
    Resize(u16, u16),
    Tick,
    /// Background results, each with the epoch it was computed in (see [`App::epoch`]).
    Started(u64, usize),
    Done(u64, usize, std::result::Result<Arc<MatrixReport>, String>),
    Heat(u64, usize, std::result::Result<Heat, String>),
    /// A matrix's whole tuned spectrum, asked for with `F`.
    Spectrum(usize, std::result::Result<Vec<f64>, String>),
    Exported(std::result::Result<PathBuf, String>),
    /// What the running repair is doing.
    RepairProgress(String),
    Repaired(std::result::Result<app::RepairOutcome, String>),
    /// SIGTERM, SIGHUP, SIGINT or SIGQUIT: leave as on `q`, restoring the terminal.
    Signal(i32),
    /// An event of run N's background work (several runs).
    Run(usize, Box<Event>),
    /// The compare view's matrix in every run.
    Compared(
        String,
        Vec<(String, std::result::Result<crate::compare::Across, String>)>,
    ),
}

pub struct Settings {
    pub rule: crate::spectral::Rule,
    pub depth: Depth,
    pub background: theme::Background,
    /// Where flags, marks and the last view persist (None: not persisted).
    pub state_dir: Option<PathBuf>,
    pub workers: usize,
    /// Capture the mouse from the start (`--no-mouse` turns it off).
    pub mouse: bool,
}

/// The app for an engine's selected matrices, before any work.
pub fn build_app(engine: &Engine, rule: crate::spectral::Rule, user: UserState) -> App {
    let mut app = build_rows_app(engine, rule, user);
    let tuned = engine.inputs.tuned.path();
    let stem = tuned
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    app.repair.default_output = format!("{stem}-repaired");
    app.repair.adapter = matches!(engine.inputs.tuned, crate::checkpoint::Tuned::Adapter(_));
    app
}

fn build_rows_app(engine: &Engine, rule: crate::spectral::Rule, user: UserState) -> App {
    let rows = engine
        .matrices()
        .iter()
        .map(|p| Row {
            name: p.name.clone(),
            shape: p.dims(),
            block: block_of(&p.name).unwrap_or("").to_string(),
            status: Status::Queued,
        })
        .collect();
    let inp = &engine.inputs;
    let base = inp
        .base
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tuned = inp
        .tuned
        .path()
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut inputs = vec![
        format!(
            "base  {} ({})",
            inp.base.path.display(),
            inp.base.format.as_str()
        ),
        format!(
            "tuned {} ({})",
            inp.tuned.path().display(),
            inp.tuned.format().as_str()
        ),
    ];
    if let Tuned::Adapter(a) = &inp.tuned {
        inputs.push(format!("adapter {}", a.summary()));
    }
    let title = format!("{base} → {tuned}");
    App::new(rows, title, inputs, rule, engine.keep(), user)
}

/// Apply one event; true when the screen must be redrawn.
pub fn handle(app: &mut App, ev: Event, cmds: &mut Vec<Cmd>) -> bool {
    match ev {
        Event::Key(k) => {
            cmds.extend(app.on_key(k));
            true
        }
        Event::Mouse(m) => {
            cmds.extend(app.on_mouse(m));
            true
        }
        Event::Resize(w, h) => {
            app.size = ratatui::layout::Rect::new(0, 0, w, h);
            true
        }
        // Ticks only refresh elapsed times and the ETA while work is under way.
        Event::Tick => {
            !app.spectrum.pending.is_empty()
                || app
                    .rows
                    .iter()
                    .any(|r| matches!(r.status, Status::Computing(_)))
        }
        Event::Spectrum(r, res) => {
            app.on_spectrum(r, res);
            true
        }
        // Results from before a recomputation hold too few vectors.
        Event::Started(e, _) | Event::Done(e, ..) | Event::Heat(e, ..) if e != app.epoch => false,
        Event::Started(_, r) => {
            app.on_started(r);
            true
        }
        Event::Done(_, r, res) => {
            app.on_done(r, res);
            true
        }
        Event::Heat(_, _, Ok(h)) => {
            app.on_heat(h);
            true
        }
        Event::Heat(_, r, Err(e)) => {
            app.on_heat_error(r, e);
            true
        }
        Event::Signal(_) => {
            app.quit = true;
            false
        }
        Event::Run(_, ev) => handle(app, *ev, cmds),
        Event::Compared(matrix, rows) => {
            app.on_compared(&matrix, rows);
            true
        }
        Event::RepairProgress(what) => {
            app.on_repair_progress(what);
            true
        }
        Event::Repaired(r) => {
            app.on_repaired(r);
            true
        }
        Event::Exported(r) => {
            app.message = Some(match r {
                Ok(p) => format!("wrote {}", p.display()),
                Err(e) => format!("export failed: {e}"),
            });
            true
        }
    }
}

/// Runs the explorer until the user quits (exit code 0) or a termination signal arrives
/// (128 + its number, after the terminal is restored).
pub fn run(engine: Engine, settings: Settings) -> Result<u8> {
    run_many(vec![(String::new(), engine)], settings)
}

/// One run in the explorer: its engine and, once shown, its state and workers.
struct Slot {
    label: String,
    engine: Arc<Engine>,
    /// Where this run's background work reports: forwarded to the loop tagged with the run.
    tx: mpsc::Sender<Event>,
    loaded: Option<Loaded>,
}

struct Loaded {
    app: App,
    sched: Arc<worker::Scheduler>,
    state: Option<crate::flags::StateFile>,
}

impl Slot {
    fn new(i: usize, label: String, engine: Engine, main: mpsc::Sender<Event>) -> Slot {
        let (tx, rx) = mpsc::channel::<Event>();
        std::thread::spawn(move || {
            for ev in rx {
                if main.send(Event::Run(i, Box::new(ev))).is_err() {
                    return;
                }
            }
        });
        Slot {
            label,
            engine: Arc::new(engine),
            tx,
            loaded: None,
        }
    }

    /// The run's state (its flags file, where the user was) and workers, the first time it
    /// is shown: runs load lazily, as matrices do.
    fn load(&mut self, settings: &Settings, theme: &Theme) -> &mut Loaded {
        if self.loaded.is_none() {
            let engine = &self.engine;
            let state = settings.state_dir.as_ref().map(|d| {
                crate::flags::StateFile::open(crate::flags::state_path(d, &engine.inputs))
            });
            let mut app = build_app(engine, settings.rule, UserState::default());
            app.message = engine
                .cache
                .dir()
                .and_then(|d| d.parent())
                .and_then(crate::flags::legacy_warning);
            if let Some(st) = &state {
                app.stored = st.stored.clone();
                app.message = st.warning.clone().or(app.message.take());
                if let Some(v) = &st.stored.view {
                    app.restore_view(v);
                }
            }
            app.heatmap.rows_per_line = ui::heatmap::HeatmapView::rows_per_line(theme);
            app.mouse = settings.mouse;
            let sched = worker::Scheduler::new(app.rows.len(), app.keep);
            if let Some(r) = app.selected_row() {
                sched.focus(r);
            }
            worker::spawn(
                engine.clone(),
                sched.clone(),
                self.tx.clone(),
                settings.workers,
            );
            self.loaded = Some(Loaded { app, sched, state });
        }
        self.loaded.as_mut().expect("loaded above")
    }
}

/// The shown run's app (always loaded).
fn shown(slots: &mut [Slot], active: usize) -> &mut App {
    &mut slots[active]
        .loaded
        .as_mut()
        .expect("the shown run is loaded")
        .app
}

/// The run bar of the shown run: every run's intruders so far under its k and ε.
fn update_run_bar(slots: &mut [Slot], active: usize) {
    if slots.len() < 2 {
        return;
    }
    let rule = shown(slots, active).rule;
    let bar = app::RunBar {
        labels: slots.iter().map(|s| s.label.clone()).collect(),
        active,
        totals: slots
            .iter()
            .map(|s| {
                s.loaded
                    .as_ref()
                    .map(|l| (l.app.total_under(&rule), l.app.done(), l.app.rows.len()))
            })
            .collect(),
    };
    shown(slots, active).runs = Some(bar);
}

/// Show run `to` in place of `from`, on the same matrix and vector, with the same k and ε and
/// tab; `from`'s background work pauses (it resumes when shown again).
fn switch_run(slots: &mut [Slot], from: usize, to: usize, settings: &Settings, theme: &Theme) {
    let (view, rule, tab, size, mouse) = {
        let a = shown(slots, from);
        (a.view(), a.rule, a.tab, a.size, a.mouse)
    };
    if let Some(l) = &slots[from].loaded {
        l.sched.set_paused(true);
    }
    let l = slots[to].load(settings, theme);
    let app = &mut l.app;
    app.size = size;
    app.mouse = mouse;
    app.tab = tab;
    if let Some(v) = &view {
        app.restore_view(v);
    }
    let mut cmds = Vec::new();
    app.set_rule(rule, &mut cmds);
    for c in cmds {
        if let Cmd::Recompute { keep, epoch } = c {
            l.sched.restart(epoch, keep);
        }
    }
    l.sched.set_paused(l.app.paused);
    if let Some(r) = l.app.selected_row() {
        l.sched.focus(r);
    }
    update_run_bar(slots, to);
}

/// The explorer over several runs of one base (`lorascope BASE RUN1 RUN2 …`), each with its
/// label: a run bar, `1`–`9` and `r` switch runs, `c` shows the selected matrix in every run.
/// One run is [`run`].
pub fn run_many(runs: Vec<(String, Engine)>, settings: Settings) -> Result<u8> {
    // Before any worker starts: their panics must not be printed over the screen.
    let _panics = PanicRouting::install();
    let (tx, rx) = mpsc::channel::<Event>();
    quit_on_signals(tx.clone());
    let theme = Theme::new(settings.depth).on(settings.background);
    let mut slots: Vec<Slot> = runs
        .into_iter()
        .enumerate()
        .map(|(i, (label, engine))| Slot::new(i, label, engine, tx.clone()))
        .collect();
    if slots.is_empty() {
        return Err(Error::Usage("no run to explore".into()));
    }
    let mut active = 0;
    slots[0].load(&settings, &theme);
    update_run_bar(&mut slots, active);
    let mut signal = None;

    let stop_all = |slots: &[Slot]| {
        for s in slots {
            if let Some(l) = &s.loaded {
                l.sched.stop();
            }
        }
    };
    let mut terminal = match init_terminal() {
        Ok(t) => t,
        Err(e) => {
            stop_all(&slots);
            return Err(Error::Usage(format!("cannot start the terminal UI: {e}")));
        }
    };
    if let Ok(s) = terminal.size() {
        shown(&mut slots, active).size = ratatui::layout::Rect::new(0, 0, s.width, s.height);
    }
    if settings.mouse {
        let _ = set_mouse(true);
    }
    // Input on its own thread, so a key is handled as soon as it arrives.
    let input_tx = tx.clone();
    std::thread::spawn(move || loop {
        let ev = match event::poll(Duration::from_secs(1)) {
            Ok(true) => match event::read() {
                Ok(event::Event::Key(k)) if k.kind == KeyEventKind::Press => Event::Key(k),
                Ok(event::Event::Resize(w, h)) => Event::Resize(w, h),
                // Clicks and the wheel only: motion (reported while captured) changes nothing.
                Ok(event::Event::Mouse(m))
                    if matches!(
                        m.kind,
                        event::MouseEventKind::Down(_)
                            | event::MouseEventKind::ScrollDown
                            | event::MouseEventKind::ScrollUp
                    ) =>
                {
                    Event::Mouse(m)
                }
                Ok(_) => continue,
                Err(_) => return,
            },
            Ok(false) => Event::Tick,
            Err(_) => return,
        };
        if input_tx.send(ev).is_err() {
            return;
        }
    });

    let result = (|| -> std::io::Result<()> {
        terminal.draw(|f| ui::render(shown(&mut slots, active), &theme, f))?;
        crate::error::panic_if_asked("ui");
        while let Ok(first) = rx.recv() {
            let mut cmds: Vec<(usize, Cmd)> = Vec::new();
            let mut dirty = false;
            // Coalesce a burst (key repeat, many results) into one frame; a signal may be
            // anywhere in it.
            for ev in std::iter::once(first).chain(rx.try_iter()) {
                if let Event::Signal(s) = ev {
                    signal = Some(s);
                }
                let mut c = Vec::new();
                match ev {
                    // A run's background work: its own app (the run bar shows its count).
                    Event::Run(i, inner) => {
                        if let Some(l) = slots.get_mut(i).and_then(|s| s.loaded.as_mut()) {
                            dirty |= handle(&mut l.app, *inner, &mut c)
                                && (i == active || slots.len() > 1);
                            cmds.extend(c.into_iter().map(|c| (i, c)));
                        }
                    }
                    Event::Compared(matrix, rows) => {
                        shown(&mut slots, active).on_compared(&matrix, rows);
                        dirty = true;
                    }
                    Event::Resize(w, h) => {
                        for l in slots.iter_mut().filter_map(|s| s.loaded.as_mut()) {
                            handle(&mut l.app, Event::Resize(w, h), &mut c);
                        }
                        dirty = true;
                    }
                    ev => {
                        dirty |= handle(shown(&mut slots, active), ev, &mut c);
                        cmds.extend(c.into_iter().map(|c| (active, c)));
                    }
                }
            }
            for (i, c) in cmds {
                let slot = &mut slots[i];
                let Some(l) = slot.loaded.as_mut() else {
                    continue;
                };
                match c {
                    Cmd::Focus(r) => l.sched.focus(r),
                    Cmd::SetPaused(p) => l.sched.set_paused(p),
                    Cmd::SaveState => match &mut l.state {
                        Some(st) => {
                            st.stored = l.app.stored.clone();
                            if let Err(e) = st.save() {
                                l.app.message = Some(format!("could not save flags: {e}"));
                            }
                        }
                        None => {
                            l.app.message =
                                Some("no state folder ($HOME unset): flags are not saved".into())
                        }
                    },
                    Cmd::Suspend => {
                        suspend();
                        resume(&mut terminal, l.app.mouse)?;
                        dirty = true;
                    }
                    Cmd::Export(format, names) => {
                        l.app.message = Some("exporting…".into());
                        let dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
                        let job = export_job(&slot.engine, &l.app, format, names, dir);
                        let tx = slot.tx.clone();
                        std::thread::spawn(move || {
                            let _ = tx.send(Event::Exported(job()));
                        });
                    }
                    Cmd::Repair(req) => {
                        let job = repair_job(
                            &slot.engine,
                            &l.app,
                            req,
                            slot.tx.clone(),
                            settings.workers,
                        );
                        let tx = slot.tx.clone();
                        std::thread::spawn(move || {
                            let _ = tx.send(Event::Repaired(job()));
                        });
                    }
                    Cmd::FullSpectrum(row) => {
                        let (engine, tx) = (slot.engine.clone(), slot.tx.clone());
                        std::thread::spawn(move || {
                            let pair = engine.matrices()[row];
                            let res = engine.full_spectrum(pair).map_err(|e| e.to_string());
                            let _ = tx.send(Event::Spectrum(row, res));
                        });
                    }
                    Cmd::Recompute { keep, epoch } => l.sched.restart(epoch, keep),
                    Cmd::SetMouse(on) => set_mouse(on)?,
                    Cmd::SwitchRun(to) if i == active && to < slots.len() && to != active => {
                        switch_run(&mut slots, active, to, &settings, &theme);
                        active = to;
                        dirty = true;
                    }
                    Cmd::SwitchRun(_) => {}
                    Cmd::Compare(matrix) => {
                        let engines: Vec<Arc<Engine>> =
                            slots.iter().map(|s| s.engine.clone()).collect();
                        let labels: Vec<String> = slots.iter().map(|s| s.label.clone()).collect();
                        let keep = shown(&mut slots, active).keep;
                        let (tx, from) = (tx.clone(), active);
                        std::thread::spawn(move || {
                            let refs: Vec<&Engine> = engines.iter().map(|e| &**e).collect();
                            let rows = crate::compare::across(&refs, from, &matrix, keep);
                            let rows = labels.into_iter().zip(rows).collect();
                            let _ = tx.send(Event::Compared(matrix, rows));
                        });
                    }
                    Cmd::Quit => {}
                }
            }
            if shown(&mut slots, active).quit {
                break;
            }
            if dirty {
                update_run_bar(&mut slots, active);
                terminal.draw(|f| ui::render(shown(&mut slots, active), &theme, f))?;
            }
        }
        Ok(())
    })();
    // Stop at once: an SVD in progress is abandoned; cache writes are atomic.
    stop_all(&slots);
    // Where the user was in each run shown, for next time (flags were saved as they were set).
    for l in slots.iter_mut().filter_map(|s| s.loaded.as_mut()) {
        if let Some(st) = &mut l.state {
            let view = l.app.view();
            if st.writable && view != st.stored.view {
                st.stored = l.app.stored.clone();
                st.stored.view = view;
                let _ = st.save();
            }
        }
    }
    restore_terminal();
    result.map_err(|e| Error::Usage(format!("terminal error: {e}")))?;
    Ok(signal.map_or(0, |s| 128u8.saturating_add(s as u8)))
}

/// The terminal in raw mode on the alternate screen. Not `ratatui::try_init`: its panic hook
/// restores the terminal whichever thread panics, and a worker's panic is contained (its matrix
/// shows the error) with the explorer still running; see [`PanicRouting`].
fn init_terminal() -> std::io::Result<ratatui::DefaultTerminal> {
    use ratatui::crossterm::{execute, terminal};
    let t = (|| {
        terminal::enable_raw_mode()?;
        execute!(std::io::stdout(), terminal::EnterAlternateScreen)?;
        ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))
    })();
    if t.is_err() {
        restore_terminal();
    }
    t
}

/// The terminal as the shell had it: mouse released, cooked mode, main screen, cursor shown
/// (`ratatui::restore` leaves the cursor hidden and the mouse captured). Safe to repeat.
fn restore_terminal() {
    let _ = set_mouse(false);
    ratatui::restore();
    let _ = ratatui::crossterm::execute!(std::io::stdout(), ratatui::crossterm::cursor::Show);
}

fn set_mouse(on: bool) -> std::io::Result<()> {
    use ratatui::crossterm::{event, execute};
    if on {
        execute!(std::io::stdout(), event::EnableMouseCapture)
    } else {
        execute!(std::io::stdout(), event::DisableMouseCapture)
    }
}

/// Back from a suspension (`fg`): the same terminal object, so no new size or cursor query, in
/// raw mode on the alternate screen again, cursor hidden, everything redrawn.
fn resume(terminal: &mut ratatui::DefaultTerminal, mouse: bool) -> std::io::Result<()> {
    use ratatui::crossterm::{execute, terminal as term};
    term::enable_raw_mode()?;
    execute!(
        std::io::stdout(),
        term::EnterAlternateScreen,
        term::Clear(term::ClearType::All)
    )?;
    if mouse {
        set_mouse(true)?;
    }
    terminal.hide_cursor()?;
    // Not `Terminal::clear`: it asks the terminal where the cursor is, and a terminal that does
    // not answer (or answers late) would end the explorer. Emptying both buffers makes the
    // next draw write every cell.
    terminal.swap_buffers();
    terminal.current_buffer_mut().reset();
    Ok(())
}

/// While the explorer runs (the thread in `UI_THREAD`): a panic on its thread ends it, so the
/// terminal is restored and then the panic printed; other threads' panics are contained where
/// they run ([`crate::error::contain`]), and printing them would draw over the screen, so only
/// their location is kept, for the error shown. Otherwise panics go to the previous hook.
static UI_THREAD: std::sync::Mutex<Option<std::thread::ThreadId>> = std::sync::Mutex::new(None);

/// Routes panics as above for as long as it lives.
struct PanicRouting;

impl PanicRouting {
    fn install() -> PanicRouting {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let print = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let ui = *UI_THREAD.lock().unwrap_or_else(|e| e.into_inner());
                match ui {
                    None => print(info),
                    Some(ui) if ui == std::thread::current().id() => {
                        restore_terminal();
                        print(info);
                    }
                    Some(_) => crate::error::note_panic(info),
                }
            }));
        });
        *UI_THREAD.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current().id());
        PanicRouting
    }
}

impl Drop for PanicRouting {
    fn drop(&mut self) {
        *UI_THREAD.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Termination signals become an [`Event::Signal`] instead of killing the process with the
/// terminal in raw mode on the alternate screen (`kill`, a closed tmux pane, SIGINT from
/// outside: in raw mode Ctrl-C arrives as a key). The handler only writes the signal's number
/// to a pipe (async-signal-safe); a thread turns it into the event. Handlers are process-wide,
/// so it works whichever thread the signal lands on. SA_RESETHAND: a second signal kills at
/// once, should quitting ever hang.
#[cfg(unix)]
fn quit_on_signals(tx: mpsc::Sender<Event>) {
    use std::sync::atomic::{AtomicI32, Ordering};
    static PIPE: AtomicI32 = AtomicI32::new(-1);
    extern "C" fn on_signal(sig: libc::c_int) {
        let fd = PIPE.load(Ordering::Relaxed);
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; one byte from a live local.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
    let mut fds = [0; 2];
    // SAFETY: plain libc calls on locals; the handler touches only the pipe's write end,
    // which stays open for the life of the process.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return;
        }
        PIPE.store(fds[1], Ordering::Relaxed);
        for s in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
    let read_end = fds[0];
    std::thread::spawn(move || loop {
        let mut b = 0u8;
        // SAFETY: reading one byte into a local from our own pipe.
        let n = unsafe { libc::read(read_end, (&mut b as *mut u8).cast(), 1) };
        if n == 1 {
            let _ = tx.send(Event::Signal(b as i32));
            return;
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return;
    });
}

#[cfg(not(unix))]
fn quit_on_signals(_: mpsc::Sender<Event>) {}

/// Build and write a report off the UI thread (heatmaps may need the cache or an SVD).
pub fn export_job(
    engine: &Arc<Engine>,
    app: &App,
    format: crate::report::ReportFormat,
    names: Vec<String>,
    dir: PathBuf,
) -> impl FnOnce() -> std::result::Result<PathBuf, String> + Send + 'static {
    let engine = engine.clone();
    let scan = app.as_scan();
    let user = app.user.clone();
    let (rule, total, keep) = (app.rule, app.rows.len(), app.keep);
    let job = move || {
        let select = |name: &str, _: usize| names.iter().any(|n| n == name);
        let results = crate::report::Results::new(&engine, &scan, &user, &rule, total);
        let r = crate::report::build(
            &engine,
            results,
            &select,
            &crate::report::now_rfc3339(),
            keep,
        );
        crate::report::write_new(
            &dir,
            "lorascope-report",
            format.extension(),
            format.render(&r).as_bytes(),
        )
        .map_err(|e| e.to_string())
    };
    // A panic while building the report fails the export, not the explorer.
    move || crate::error::contain(|| Ok(job())).unwrap_or_else(|e| Err(e.to_string()))
}

/// Repair the analysed matrices as the explorer counts them (its k, ε and flags), write the
/// output, scan it against the base: off the UI thread, reporting progress.
pub fn repair_job(
    engine: &Arc<Engine>,
    app: &App,
    req: app::RepairRequest,
    tx: mpsc::Sender<Event>,
    jobs: usize,
) -> impl FnOnce() -> std::result::Result<app::RepairOutcome, String> + Send + 'static {
    use crate::repair::{self, Chosen, Target};
    let engine = engine.clone();
    let scan = app.as_scan();
    let user = app.user.clone();
    let (rule, keep) = (app.rule, app.keep);
    let run = move || -> Result<app::RepairOutcome> {
        let say = |what: String| {
            let _ = tx.send(Event::RepairProgress(what));
        };
        // `repair::write` checks the output too, but before the vectors are fetched is cheaper.
        let target = Target::new(&engine.inputs, &req.output, Some(req.format))?;
        repair::check_output(&engine.inputs, &target, false)?;
        let mut chosen = repair::Choice::new();
        let before = repair::Verification::counts_before(&scan, &user, &rule);
        let pairs = engine.matrices();
        for r in scan.reports() {
            let pick = repair::pick(r, &user, &rule, req.scope);
            let Some(pair) = pairs
                .iter()
                .find(|p| p.name == r.name)
                .filter(|_| !pick.is_empty())
            else {
                continue;
            };
            say(format!(
                "vectors of {}",
                crate::report::shown_name(&r.name, Some(40))
            ));
            let (_, tuned) = engine.decompositions_keeping(pair, keep)?;
            chosen.insert(
                r.name.clone(),
                Chosen::new(r, &pick, tuned, req.lambda, &user),
            );
        }
        let settings = repair::Settings {
            lambda: req.lambda,
            scope: req.scope,
            rule,
            max_shard: repair::DEFAULT_MAX_SHARD,
        };
        let last = std::sync::atomic::AtomicU64::new(u64::MAX);
        let (prov, notes) = repair::write(&engine, &chosen, &settings, &target, false, &|d, t| {
            let pct = d * 100 / t.max(1);
            if last.swap(pct, std::sync::atomic::Ordering::Relaxed) != pct {
                say(format!("writing {pct}%"));
            }
        })?;
        // The output against the base, by the rule (the cache makes the base free), over the
        // matrices the explorer shows (an --include may have added some).
        let names: Vec<String> = before
            .keys()
            .map(|n| format!("^{}$", regex::escape(n)))
            .collect();
        let inputs = crate::checkpoint::Inputs::open(
            &engine.inputs.base.path,
            &req.output,
            &crate::checkpoint::Selection::new(&names, &[])?,
        )?;
        let cache = engine
            .cache
            .dir()
            .map_or_else(crate::cache::Cache::disabled, crate::cache::Cache::open);
        let check = Engine::new(inputs, cache, engine.opts);
        let after = check.scan(jobs.max(1), &|done, total, _| {
            say(format!("verifying {done}/{total}"))
        });
        Ok(app::RepairOutcome {
            path: req.output.clone(),
            scaled: prov.count(),
            matrices: prov.matrices.len(),
            verification: repair::Verification::new(&before, &after, &rule),
            notes,
        })
    };
    // A panic while repairing fails the repair, not the explorer.
    move || crate::error::contain(run).map_err(|e| e.to_string())
}

#[cfg(unix)]
fn suspend() {
    restore_terminal();
    // SAFETY: raising a signal on ourselves; the shell resumes us with SIGCONT.
    unsafe {
        libc::raise(libc::SIGTSTP);
    }
}

#[cfg(not(unix))]
fn suspend() {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::checkpoint::{Inputs, Selection};
    use crate::spectral::Rule;

    #[test]
    fn switching_runs_keeps_the_matrix_vector_and_rule_and_pauses_the_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let demo = crate::demo::ensure(dir.path()).unwrap();
        let open = |t: &std::path::Path| {
            let inputs = Inputs::open(&demo.base, t, &Selection::default()).unwrap();
            Engine::new(inputs, Cache::disabled(), crate::engine::Options::default())
        };
        let (tx, _rx) = mpsc::channel();
        let mut slots = vec![
            Slot::new(0, "lora".into(), open(&demo.lora), tx.clone()),
            Slot::new(1, "full".into(), open(&demo.full), tx),
        ];
        let settings = Settings {
            rule: Rule::default(),
            depth: Depth::C256,
            background: theme::Background::Dark,
            state_dir: None,
            workers: 1,
            mouse: false,
        };
        let theme = Theme::new(Depth::C256);
        slots[0].load(&settings, &theme);
        update_run_bar(&mut slots, 0);
        assert!(slots[1].loaded.is_none(), "a run loads when first shown");
        let keep = {
            let a = shown(&mut slots, 0);
            a.list.sel = 7;
            a.cursor_j = 3;
            a.tab = app::Tab::Overview;
            let mut cmds = Vec::new();
            a.set_rule(Rule::new(12, 0.4).unwrap(), &mut cmds);
            assert!(cmds.is_empty(), "k within the vectors computed");
            a.keep
        };
        let name = {
            let a = shown(&mut slots, 0);
            a.rows[a.selected_row().unwrap()].name.clone()
        };
        switch_run(&mut slots, 0, 1, &settings, &theme);
        let sched0 = slots[0].loaded.as_ref().unwrap().sched.clone();
        assert!(sched0.paused(), "the run left stops computing");
        let l = slots[1].loaded.as_ref().expect("loaded when shown");
        let b = &l.app;
        let row = b.selected_row().unwrap();
        assert_eq!(b.rows[row].name, name);
        assert_eq!(l.sched.focused(), Some(row), "its matrix first");
        assert!(!l.sched.paused());
        assert_eq!((b.cursor_j, b.tab), (3, app::Tab::Overview));
        assert_eq!((b.rule.k(), b.rule.epsilon()), (12, 0.4));
        let bar = b.runs.as_ref().unwrap();
        assert_eq!(
            (bar.active, bar.labels.clone()),
            (1, vec!["lora".into(), "full".into()])
        );
        assert!(bar.totals.iter().all(Option::is_some));
        // Back, with a k above the vectors computed: the run shown recomputes.
        {
            let mut cmds = Vec::new();
            shown(&mut slots, 1).set_rule(Rule::new(keep + 1, 0.4).unwrap(), &mut cmds);
        }
        switch_run(&mut slots, 1, 0, &settings, &theme);
        let a = &slots[0].loaded.as_ref().unwrap().app;
        assert_eq!((a.rule.k(), a.keep, a.epoch), (keep + 1, keep + 1, 1));
        assert!(!sched0.paused(), "resumed as the user left it");
        for s in &slots {
            s.loaded.as_ref().unwrap().sched.stop();
        }
    }
}
