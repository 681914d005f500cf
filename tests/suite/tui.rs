//! The explorer without a terminal: key-driven state changes, persistence, and whole screens
//! on a TestBackend (insta snapshots at 80×24 and 160×48).

use std::path::Path;

use lorascope::cache::Cache;
use lorascope::checkpoint::{Inputs, Selection};
use lorascope::engine::{Engine, Options};
use lorascope::spectral::Rule;
use lorascope::tui::app::{App, Cmd, Pane, Tab, UserState};
use lorascope::tui::theme::{Depth, Theme};
use lorascope::tui::{build_app, ui, worker};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

fn demo_engine(dir: &Path) -> Engine {
    let p = lorascope::demo::ensure(dir).unwrap();
    let inputs = Inputs::open(&p.base, &p.lora, &Selection::default()).unwrap();
    Engine::new(inputs, Cache::disabled(), Options::default())
}

/// The demo with the top-k route from 64 on (its matrices are 128 wide), keeping `keep` tuned
/// vectors per matrix.
fn topk_demo_engine(dir: &Path, keep: usize) -> Engine {
    let p = lorascope::demo::ensure(dir).unwrap();
    let inputs = Inputs::open(&p.base, &p.lora, &Selection::default()).unwrap();
    let opts = Options {
        keep,
        fast_min_dim: 64,
        ..Options::default()
    };
    Engine::new(inputs, Cache::disabled(), opts)
}

/// An app with every matrix analysed, as after the background work finished.
fn analysed(engine: &Engine) -> App {
    let mut app = build_app(engine, Rule::default(), UserState::default());
    for (i, p) in engine.matrices().into_iter().enumerate() {
        let (r, ..) = engine.analyze_with_decompositions(p).unwrap();
        app.on_done(i, Ok(std::sync::Arc::new(r)));
    }
    app
}

fn give_heat(engine: &Engine, app: &mut App) {
    let row = app.selected_row().unwrap();
    let (b, t) = engine.decompositions_of(engine.matrices()[row]).unwrap();
    app.on_heat(worker::heat_of(row, &b, &t));
}

fn press(app: &mut App, keys: &str) -> Vec<Cmd> {
    keys.chars()
        .flat_map(|c| app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)))
        .collect()
}

fn code(app: &mut App, c: KeyCode) -> Vec<Cmd> {
    app.on_key(KeyEvent::new(c, KeyModifiers::NONE))
}

/// Intruders by the rule alone, from the reports: an independent count.
fn rule_total(app: &App, k: usize, eps: f64) -> usize {
    (0..app.rows.len())
        .map(|r| {
            app.report(r)
                .unwrap()
                .intruders(&Rule::new(k, eps).unwrap())
                .len()
        })
        .sum()
}

#[test]
fn navigation_filter_and_jumps() {
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    assert_eq!(app.list.visible.len(), 24);
    assert_eq!(press(&mut app, "j"), [Cmd::Focus(1)]);
    assert_eq!(code(&mut app, KeyCode::Down), [Cmd::Focus(2)]);
    press(&mut app, "G");
    assert_eq!(app.list.sel, 23);
    press(&mut app, "g");
    assert_eq!(app.list.sel, 0);
    // n: the first matrix with intruders is the first of block 2.
    assert_eq!(press(&mut app, "n"), [Cmd::Focus(12)]);
    assert!(app.rows[12].name.starts_with("model.layers.2."));
    press(&mut app, "N"); // wraps backwards to the last one with intruders
    assert_eq!(app.selected_row(), Some(23));
    // Filter with a regex; Esc clears it and keeps the selection.
    press(&mut app, "/q_proj");
    code(&mut app, KeyCode::Enter);
    assert_eq!(app.list.visible.len(), 4);
    assert!(app
        .list
        .visible
        .iter()
        .all(|&i| app.rows[i].name.contains("q_proj")));
    code(&mut app, KeyCode::Esc);
    assert_eq!(app.list.visible.len(), 24);
    press(&mut app, "/[");
    code(&mut app, KeyCode::Enter);
    assert!(app
        .message
        .as_deref()
        .unwrap()
        .contains("not a valid regex"));
    // Panes cycle; s sorts by count.
    code(&mut app, KeyCode::Tab);
    assert_eq!(app.focus, Pane::Spectrum);
    code(&mut app, KeyCode::BackTab);
    assert_eq!(app.focus, Pane::Layers);
    press(&mut app, "s");
    let first = app.list.visible[0];
    let counts: Vec<usize> = app
        .list
        .visible
        .iter()
        .map(|&i| app.intruders(i).unwrap().len())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    assert_eq!(app.intruders(first).unwrap().len(), counts[0]);
    assert_eq!(press(&mut app, "p"), [Cmd::SetPaused(true)]);
    assert_eq!(press(&mut app, "q"), [Cmd::Quit]);
    assert!(app.quit);
}

#[test]
fn epsilon_and_k_change_live_from_stored_cj() {
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    assert_eq!(app.total_intruders(), rule_total(&app, 10, 0.5));
    press(&mut app, "]]");
    assert_eq!(app.rule.epsilon(), 0.6);
    assert_eq!(app.total_intruders(), rule_total(&app, 10, 0.6));
    assert!(app.total_intruders() > rule_total(&app, 10, 0.5));
    press(&mut app, "[-");
    assert_eq!(app.rule.epsilon(), 0.5);
    press(&mut app, "e");
    code(&mut app, KeyCode::Backspace);
    code(&mut app, KeyCode::Backspace);
    code(&mut app, KeyCode::Backspace);
    press(&mut app, "0.3");
    code(&mut app, KeyCode::Enter);
    assert_eq!(app.rule.epsilon(), 0.3);
    assert_eq!(app.total_intruders(), rule_total(&app, 10, 0.3));
    // The prompt starts with the current value: typing appends.
    press(&mut app, "e7");
    code(&mut app, KeyCode::Enter);
    assert_eq!(app.rule.epsilon(), 0.37);
    press(&mut app, "K");
    code(&mut app, KeyCode::Backspace);
    code(&mut app, KeyCode::Backspace);
    press(&mut app, "3");
    code(&mut app, KeyCode::Enter);
    assert_eq!(app.rule.k(), 3);
    assert_eq!(app.total_intruders(), rule_total(&app, 3, 0.37));
    press(&mut app, "K");
    code(&mut app, KeyCode::Backspace);
    press(&mut app, "0");
    code(&mut app, KeyCode::Enter);
    assert_eq!(app.rule.k(), 3, "k = 0 is refused");
    assert!(app.message.as_deref().unwrap().contains("k must be"));
    // Esc backs out one level at a time; on the main screen it only says how to quit.
    press(&mut app, "z");
    assert!(app.zoom);
    press(&mut app, "/q_proj");
    code(&mut app, KeyCode::Enter);
    code(&mut app, KeyCode::Esc);
    assert!(!app.zoom && app.list.filter.is_some());
    code(&mut app, KeyCode::Esc);
    assert!(app.list.filter.is_none());
    assert!(code(&mut app, KeyCode::Esc).is_empty());
    assert!(!app.quit);
    assert_eq!(app.message.as_deref(), Some("q quits"));
}

fn click(app: &mut App, x: u16, y: u16) -> Vec<Cmd> {
    use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    app.on_mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: x,
        row: y,
        modifiers: KeyModifiers::NONE,
    })
}

fn wheel(app: &mut App, x: u16, y: u16, down: bool) -> Vec<Cmd> {
    use ratatui::crossterm::event::{MouseEvent, MouseEventKind};
    app.on_mouse(MouseEvent {
        kind: if down {
            MouseEventKind::ScrollDown
        } else {
            MouseEventKind::ScrollUp
        },
        column: x,
        row: y,
        modifiers: KeyModifiers::NONE,
    })
}

#[test]
fn pages_move_by_the_rows_shown_and_the_mouse_selects_what_it_clicks() {
    use lorascope::tui::layout;
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    app.size = ratatui::layout::Rect::new(0, 0, 80, 24);
    let areas = layout::areas(&app, app.size);
    let list = areas.layers.unwrap();
    // 80×24: the list shows 20 rows; PgDn moves by them, PgUp back.
    assert_eq!(
        layout::page_rows(&app, Pane::Layers),
        list.height as usize - 2
    );
    code(&mut app, KeyCode::PageDown);
    assert_eq!(app.list.sel, 20);
    code(&mut app, KeyCode::PageUp);
    assert_eq!(app.list.sel, 0);
    code(&mut app, KeyCode::End);
    assert_eq!(app.list.sel, 23);
    code(&mut app, KeyCode::Home);
    assert_eq!(app.list.sel, 0);

    // A click on the list's fifth row selects the fifth matrix.
    assert_eq!(click(&mut app, list.x + 5, list.y + 1 + 4), [Cmd::Focus(4)]);
    assert_eq!(app.list.sel, 4);
    // The wheel over the list scrolls it by 3.
    assert_eq!(
        wheel(&mut app, list.x + 5, list.y + 3, true),
        [Cmd::Focus(7)]
    );
    wheel(&mut app, list.x + 5, list.y + 3, false);
    assert_eq!(app.list.sel, 4);

    // A click on the table's fourth vector row moves the cursor to j = 3 and focuses it.
    press(&mut app, "n");
    give_heat(&e, &mut app);
    let areas = layout::areas(&app, app.size);
    let table = areas.details.unwrap();
    assert!(click(&mut app, table.x + 2, table.y + 2 + 3).is_empty());
    assert_eq!((app.focus, app.cursor_j), (Pane::Details, 3));
    // A click in the heatmap picks the tuned vector of its column and the base vector of its
    // row (two per line in colour).
    let heat = areas.heatmap.unwrap();
    click(&mut app, heat.x + 1 + 5, heat.y + 1 + 1 + 2);
    assert_eq!(app.focus, Pane::Heatmap);
    assert_eq!((app.cursor_j, app.heatmap.cursor_i), (5, 4));
    // The marker line picks the column only.
    click(&mut app, heat.x + 1 + 1, heat.y + 1);
    assert_eq!((app.cursor_j, app.heatmap.cursor_i), (1, 4));
    // PgDn in the heatmap moves the base cursor by the rows it shows.
    let rows = layout::page_rows(&app, Pane::Heatmap);
    assert_eq!(rows, (heat.height as usize - 4) * 2);
    code(&mut app, KeyCode::PageDown);
    assert_eq!(app.heatmap.cursor_i, 4 + rows);
    // m hands the mouse to the terminal and back.
    let before = app.mouse;
    assert_eq!(press(&mut app, "m"), [Cmd::SetMouse(!before)]);
    assert_eq!(press(&mut app, "m"), [Cmd::SetMouse(before)]);
}

#[test]
fn flags_override_the_rule_and_persist() {
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    press(&mut app, "n");
    let row = app.selected_row().unwrap();
    let name = app.rows[row].name.clone();
    let first = app.intruders(row).unwrap()[0];
    let before = app.total_intruders();
    press(&mut app, &"l".repeat(first));
    assert_eq!(app.cursor_j, first);
    assert_eq!(press(&mut app, "f"), [Cmd::SaveState]);
    assert_eq!(app.flag(&name, first), Some(false));
    assert_eq!(app.total_intruders(), before - 1);
    assert_eq!(app.overrides(), 1);
    // Flag a non-intruder (vector 0 of the first matrix) as an intruder.
    press(&mut app, "g");
    press(&mut app, "f");
    assert_eq!(app.flag(&app.rows[0].name.clone(), 0), Some(true));
    assert_eq!(app.total_intruders(), before);
    press(&mut app, " ");
    assert!(app.user.marks.contains(&app.rows[0].name));

    // Stored by the weights' content as flags are set; a new explorer on the same pair gets
    // them back as its matrices are analysed, and finds the view where it was left.
    assert_eq!(app.stored.matrices.len(), 2);
    let path = lorascope::flags::state_path(d.path(), &e.inputs);
    assert_eq!(
        path,
        lorascope::flags::state_path(d.path(), &demo_engine(d.path()).inputs)
    );
    let mut file = lorascope::flags::StateFile::open(path.clone());
    file.stored = app.stored.clone();
    file.stored.view = app.view();
    file.save().unwrap();
    let file = lorascope::flags::StateFile::open(path.clone());
    assert!(file.warning.is_none());
    let mut app2 = build_app(&e, Rule::default(), UserState::default());
    app2.stored = file.stored.clone();
    app2.restore_view(file.stored.view.as_ref().unwrap());
    assert_eq!(app2.selected_row(), Some(0));
    for (i, p) in e.matrices().into_iter().enumerate() {
        let (r, ..) = e.analyze_with_decompositions(p).unwrap();
        app2.on_done(i, Ok(std::sync::Arc::new(r)));
    }
    assert_eq!(app2.user, app.user);
    assert_eq!(app2.flag(&name, first), Some(false));
    assert_eq!(app2.total_intruders(), before);
    // Unflagging returns to the rule and drops the entry.
    press(&mut app, "f");
    assert_eq!(app.flag(&app.rows[0].name.clone(), 0), None);
    // The full fine-tune of the same base has its own file.
    let p = lorascope::demo::ensure(d.path()).unwrap();
    let full = Inputs::open(&p.base, &p.full, &Selection::default()).unwrap();
    assert_ne!(path, lorascope::flags::state_path(d.path(), &full));
}

#[test]
fn reopening_a_pair_returns_to_the_matrix_vector_pane_and_zoom() {
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    press(&mut app, "n");
    press(&mut app, "lll");
    code(&mut app, KeyCode::Tab);
    code(&mut app, KeyCode::Tab);
    press(&mut app, "z");
    let view = app.view().unwrap();
    assert_eq!(
        (view.vector, view.zoom, view.pane.as_str()),
        (3, true, "Heatmap")
    );
    let mut again = build_app(&e, Rule::default(), UserState::default());
    again.restore_view(&view);
    assert_eq!(again.selected_row(), app.selected_row());
    assert_eq!(
        (again.cursor_j, again.focus, again.zoom),
        (3, Pane::Heatmap, true)
    );
    // A matrix no longer there (another selection) leaves the start as it is.
    let gone = lorascope::flags::View {
        matrix: "no.such.matrix".into(),
        ..view
    };
    let mut fresh = build_app(&e, Rule::default(), UserState::default());
    fresh.restore_view(&gone);
    assert_eq!((fresh.list.sel, fresh.cursor_j, fresh.zoom), (0, 0, false));
}

fn screen(app: &App, theme: Theme, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| ui::render(app, &theme, f)).unwrap();
    let buf = t.backend().buffer();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn screens_at_80x24_and_160x48() {
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    press(&mut app, "n");
    give_heat(&e, &mut app);
    press(&mut app, "ll");
    let theme = Theme::new(Depth::C256);
    let path = d.path().to_string_lossy().into_owned();
    insta::with_settings!({filters => vec![(path.as_str(), "[DEMO]")]}, {
        for (w, h) in [(80, 24), (120, 40), (160, 48)] {
            insta::assert_snapshot!(format!("main_{w}x{h}"), screen(&app, theme, w, h));
        }
        // The same panes, whole, in every colour depth (the text does not depend on it).
        for depth in [Depth::True, Depth::C16, Depth::Mono] {
            for (w, h) in [(80, 24), (120, 40)] {
                let s = screen(&app, Theme::new(depth), w, h);
                for part in ["┌ matrices 24", "tuned ", "base ", "top vectors", "? help  q quit"] {
                    assert!(s.contains(part), "{depth:?} {w}×{h}: no `{part}`:\n{s}");
                }
            }
        }
        press(&mut app, "o");
        assert_eq!(app.tab, Tab::Overview);
        for (w, h) in [(80, 24), (160, 48)] {
            insta::assert_snapshot!(format!("overview_{w}x{h}"), screen(&app, theme, w, h));
        }
        press(&mut app, "o?");
        insta::assert_snapshot!("help_80x24", screen(&app, theme, 80, 24));
        press(&mut app, "x"); // any key closes help
        code(&mut app, KeyCode::Tab);
        code(&mut app, KeyCode::Tab);
        code(&mut app, KeyCode::Enter);
        insta::assert_snapshot!("heatmap_zoomed_80x24_no_color", screen(&app, Theme::new(Depth::Mono), 80, 24));
    });
    let small = screen(&app, theme, 50, 12);
    assert!(small.contains("terminal too small (50×12)"), "{small}");
}

#[test]
fn the_heatmap_and_intruders_keep_their_colours_in_256_and_16_colours() {
    use lorascope::tui::theme::{RAMP_16, RAMP_256};
    use ratatui::style::Color;
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    press(&mut app, "n");
    give_heat(&e, &mut app);
    for (depth, ramp) in [
        (Depth::C256, RAMP_256.map(Color::Indexed).to_vec()),
        (Depth::C16, RAMP_16.to_vec()),
    ] {
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| ui::render(&app, &Theme::new(depth), f)).unwrap();
        let buf = t.backend().buffer();
        let mut heat = std::collections::BTreeSet::new();
        for c in &buf.content {
            for col in [c.fg, c.bg] {
                if let Some(i) = ramp.iter().position(|r| *r == col) {
                    heat.insert(i);
                }
            }
        }
        // The demo's heatmap spans low and high similarities: at least 4 distinct steps.
        assert!(heat.len() >= 4, "{depth:?}: ramp steps on screen {heat:?}");
        let red = if depth == Depth::C256 {
            Color::Indexed(203)
        } else {
            Color::LightRed
        };
        assert!(
            buf.content.iter().any(|c| c.fg == red),
            "{depth:?}: no intruder colour"
        );
    }
}

#[test]
fn every_popup_fits_whole_at_80x24_and_at_the_smallest_size() {
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    let theme = Theme::new(Depth::C256);
    for (w, h) in [(80, 24), (120, 40), (60, 16)] {
        app.size = ratatui::layout::Rect::new(0, 0, w, h);
        press(&mut app, "x");
        let s = screen(&app, theme, w, h);
        for line in [
            "export 1 matrix report to the working folder as:",
            "m Markdown · h HTML · j JSON · c CSV",
            "Esc cancel",
        ] {
            assert!(s.contains(line), "{w}×{h}: `{line}` clipped:\n{s}");
        }
        code(&mut app, KeyCode::Esc);
        assert!(app.popup.is_none());
        press(&mut app, "?");
        // Every binding's help is on screen (two columns where one does not fit), or is
        // reached by scrolling where neither fits.
        let mut seen = screen(&app, theme, w, h);
        for _ in 0..lorascope::tui::keys::BINDINGS.len() {
            press(&mut app, "j");
            seen += &screen(&app, theme, w, h);
        }
        assert!(app.popup.is_some(), "scrolling closed the help");
        // Scrolling stops at the last line shown, so one step back moves at once.
        let most = lorascope::tui::keys::BINDINGS
            .len()
            .saturating_sub(h as usize - 2);
        assert_eq!(app.help.scroll, most, "{w}×{h}");
        press(&mut app, "k");
        assert_eq!(app.help.scroll, most.saturating_sub(1), "{w}×{h}");
        for b in lorascope::tui::keys::BINDINGS {
            assert!(
                seen.contains(b.help),
                "{w}×{h}: help lacks `{}`:\n{seen}",
                b.help
            );
        }
        press(&mut app, "x");
        press(&mut app, "e");
        // The prompt's title names its keys, from the prompt's key table.
        assert_eq!(lorascope::tui::keys::prompt_hint(), "⏎ apply  Esc cancel");
        let s = screen(&app, theme, w, h);
        assert!(s.contains("ε in (0, 1] · ⏎ apply  Esc cancel"), "{s}");
        code(&mut app, KeyCode::Esc);
    }
}

#[test]
fn the_status_line_and_help_come_from_the_key_table() {
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    // At every width the status bar keeps `? help` and `q quit` at its right end, and fills
    // the rest with the table's other hints in order.
    for w in [60, 80, 120, 200] {
        let s = screen(&app, Theme::new(Depth::Mono), w, 24);
        let status = s.lines().last().unwrap();
        assert!(status.ends_with("? help  q quit"), "{w}: {status}");
        let left = lorascope::tui::keys::hints_line(w as usize - 16);
        assert!(status.starts_with(&left), "{w}: {status}");
        assert!(
            !left.is_empty() && status.chars().count() <= w as usize,
            "{w}: {status}"
        );
    }
    // A message keeps them too, and the flag count shows when there are flags.
    press(&mut app, "f");
    let s = screen(&app, Theme::new(Depth::Mono), 80, 24);
    let status = s.lines().last().unwrap();
    assert!(status.starts_with("vector 0 of "), "{status}");
    assert!(status.ends_with("1 flag  ? help  q quit"), "{status}");
    press(&mut app, "f");
    press(&mut app, "?");
    let s = screen(&app, Theme::new(Depth::Mono), 80, 24);
    for b in lorascope::tui::keys::BINDINGS {
        assert!(s.contains(b.help), "help lacks `{}`", b.help);
    }
}

#[test]
fn the_whole_spectrum_is_computed_on_request_and_toggles() {
    let d = tempfile::tempdir().unwrap();
    // On the demo every matrix takes the full SVD: nothing to ask for.
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    assert!(press(&mut app, "F").is_empty());
    assert!(app.message.as_deref().unwrap().contains("already shown"));

    // With the top-k route from 64 on, scans keep the top 16 of 128.
    let e = topk_demo_engine(d.path(), 16);
    let mut app = analysed(&e);
    let row = app.selected_row().unwrap();
    let (m, n) = app.rows[row].shape;
    assert_eq!(app.report(row).unwrap().sigma_tuned.len(), 16);
    let theme = Theme::new(Depth::C256);
    assert!(screen(&app, theme, 160, 48).contains("top 16 (F: all)"));

    assert_eq!(press(&mut app, "F"), vec![Cmd::FullSpectrum(row)]);
    assert!(screen(&app, theme, 160, 48).contains("· all σ… "));
    // Asked once while it runs.
    assert!(press(&mut app, "F").is_empty());
    assert!(app.message.as_deref().unwrap().contains("still computing"));

    let all = e.full_spectrum(e.matrices()[row]).unwrap();
    app.on_spectrum(row, Ok(all.clone()));
    assert!(app.spectrum.pending.is_empty());
    assert_eq!(app.spectrum.shown(Some(row)), Some(all.as_slice()));
    let big = screen(&app, theme, 160, 48);
    assert!(big.contains("· all σ "), "{big}");
    assert!(big.contains(&format!("{} values", m.min(n))), "{big}");
    // At 80 columns the pane is narrower than the spectrum: several values per bar.
    let small = screen(&app, theme, 80, 24);
    assert!(small.contains("/bar"), "{small}");

    // F toggles back to the top part without recomputing; moving on keeps what was computed.
    assert!(press(&mut app, "F").is_empty());
    assert!(screen(&app, theme, 160, 48).contains("top 16 (F: all)"));
    press(&mut app, "j");
    press(&mut app, "k");
    assert_eq!(app.selected_row(), Some(row));
    assert!(press(&mut app, "F").is_empty());
    assert!(screen(&app, theme, 160, 48).contains("· all σ "));

    // A failure is reported and the request can be repeated.
    press(&mut app, "j");
    let next = app.selected_row().unwrap();
    assert_eq!(press(&mut app, "F"), vec![Cmd::FullSpectrum(next)]);
    app.on_spectrum(next, Err("disk on fire".into()));
    assert!(app.message.as_deref().unwrap().contains("disk on fire"));
    assert_eq!(press(&mut app, "F"), vec![Cmd::FullSpectrum(next)]);
}

/// Applies the workers' events as the event loop does until every row has a result.
fn run_until_done(
    app: &mut App,
    rx: &std::sync::mpsc::Receiver<lorascope::tui::Event>,
) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    while app.done() < app.rows.len() {
        let ev = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the workers went quiet");
        lorascope::tui::handle(app, ev, &mut cmds);
    }
    cmds
}

#[test]
fn a_k_above_the_vectors_computed_recomputes_every_matrix_in_the_background() {
    use lorascope::tui::Event;
    let d = tempfile::tempdir().unwrap();
    let engine = std::sync::Arc::new(topk_demo_engine(d.path(), 16));
    let mut app = build_app(&engine, Rule::default(), UserState::default());
    assert_eq!(app.keep, 16);
    let sched = worker::Scheduler::new(app.rows.len(), app.keep);
    let (tx, rx) = std::sync::mpsc::channel();
    worker::spawn(engine.clone(), sched.clone(), tx, 2);
    run_until_done(&mut app, &rx);
    let old = app.report(0).unwrap().clone();
    assert_eq!(old.vectors.len(), 16);

    // k = 20 asks for more vectors than computed: every row is queued again, as a new epoch.
    press(&mut app, "K");
    code(&mut app, KeyCode::Backspace);
    code(&mut app, KeyCode::Backspace);
    press(&mut app, "20");
    let cmds = code(&mut app, KeyCode::Enter);
    assert_eq!(cmds, [Cmd::Recompute { keep: 20, epoch: 1 }]);
    assert_eq!((app.rule.k(), app.keep), (20, 20));
    assert_eq!(app.done(), 0);
    assert!(app.message.as_deref().unwrap().contains("computing 20"));
    sched.restart(1, 20);
    // The engine's own default is untouched: the jobs carry the 20.
    assert_eq!(engine.keep(), 16);
    run_until_done(&mut app, &rx);
    for r in 0..app.rows.len() {
        let rep = app.report(r).unwrap();
        assert_eq!(rep.vectors.len(), 20, "{}", rep.name);
        assert_eq!(rep.sigma_tuned.len(), 20, "{}", rep.name);
    }
    // The first 16 are the same vectors as before, and the count follows the rule at k = 20.
    let new = app.report(0).unwrap().clone();
    for (a, b) in old.vectors.iter().zip(&new.vectors) {
        assert!(
            (a.max_cos - b.max_cos).abs() < 1e-6,
            "{} vs {}",
            a.max_cos,
            b.max_cos
        );
    }
    assert_eq!(app.total_intruders(), rule_total(&app, 20, 0.5));

    // A result from before the recomputation, arriving late, is dropped.
    let mut cmds = Vec::new();
    assert!(!lorascope::tui::handle(
        &mut app,
        Event::Done(0, 0, Ok(old)),
        &mut cmds
    ));
    assert_eq!(app.report(0).unwrap().vectors.len(), 20);
    // A lower k needs nothing new.
    press(&mut app, "K");
    code(&mut app, KeyCode::Backspace);
    code(&mut app, KeyCode::Backspace);
    press(&mut app, "5");
    assert!(code(&mut app, KeyCode::Enter).is_empty());
    assert_eq!((app.rule.k(), app.keep), (5, 20));
    sched.stop();
}

#[test]
fn a_heatmap_that_cannot_be_made_says_why() {
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path());
    let mut app = analysed(&e);
    let row = app.selected_row().unwrap();
    let theme = Theme::new(Depth::C256);
    assert!(screen(&app, theme, 160, 48).contains("loading…"));
    app.on_heat_error(row, "base.safetensors changed on disk".into());
    let s = screen(&app, theme, 160, 48);
    assert!(
        s.contains("heatmap failed: base.safetensors changed"),
        "{s}"
    );
    // Another row does not show it; a heatmap that arrives later replaces it.
    press(&mut app, "j");
    assert!(!screen(&app, theme, 160, 48).contains("heatmap failed"));
    press(&mut app, "k");
    give_heat(&e, &mut app);
    assert!(app.heatmap.error.is_none());
    assert!(!screen(&app, theme, 160, 48).contains("heatmap failed"));
}

#[test]
fn the_heatmap_widens_up_to_the_vectors_computed_and_says_how_to_get_more() {
    let d = tempfile::tempdir().unwrap();
    let e = demo_engine(d.path()); // keep 32
    let mut app = analysed(&e);
    // It starts with every vector computed.
    assert_eq!(app.heatmap.k, 32);
    press(&mut app, "<");
    assert_eq!(app.heatmap.k, 21);
    press(&mut app, ">");
    assert_eq!(app.heatmap.k, 31);
    assert!(app.message.is_none());
    press(&mut app, ">>");
    assert_eq!(app.heatmap.k, 32);
    assert!(app
        .message
        .as_deref()
        .unwrap()
        .contains("a k above 32 (K) computes more"));
    // Narrowing starts from what is shown.
    press(&mut app, "<");
    assert_eq!(app.heatmap.k, 21);
}

#[test]
fn the_readme_key_table_is_the_key_table_in_code() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- keys: generated")
        .expect("the README's key table marker");
    let body = &readme[start..];
    let table = &body[body.find('\n').unwrap() + 1..body.find("<!-- keys: end -->").unwrap()];
    assert_eq!(
        table.trim_end(),
        lorascope::tui::keys::markdown_table().trim_end(),
        "README.md's key table differs from src/tui/keys.rs: paste markdown_table()'s output"
    );
}

#[test]
fn the_repair_dialog_runs_a_repair_in_the_background_and_shows_before_and_after() {
    use lorascope::tui::app::Popup;
    let d = tempfile::tempdir().unwrap();
    let e = std::sync::Arc::new(demo_engine(d.path()));
    // Not before every matrix is analysed.
    let mut early = build_app(&e, Rule::default(), UserState::default());
    press(&mut early, "R");
    assert!(early.popup.is_none());
    assert!(early
        .message
        .as_deref()
        .unwrap()
        .contains("still being analysed"));
    let mut app = analysed(&e);
    press(&mut app, "R");
    let Some(Popup::Repair(form)) = &app.popup else {
        panic!("{:?}", app.popup)
    };
    assert_eq!(
        (form.lambda.as_str(), form.output.as_str()),
        ("0.8", "lora-r4-repaired")
    );
    let s = screen(&app, Theme::new(Depth::C256), 80, 24);
    assert!(
        s.contains("repair · Tab↓ field  ←→ choose  ⏎ run  Esc cancel"),
        "{s}"
    );
    // λ = 2 is refused in the dialog, which stays open.
    code(&mut app, KeyCode::Backspace);
    code(&mut app, KeyCode::Backspace);
    code(&mut app, KeyCode::Backspace);
    press(&mut app, "2");
    assert!(code(&mut app, KeyCode::Enter).is_empty());
    assert!(app.message.as_deref().unwrap().contains("would amplify"));
    code(&mut app, KeyCode::Backspace);
    press(&mut app, "0.5");
    // Scope: all; format stays an adapter; the output in a temporary folder.
    code(&mut app, KeyCode::Tab);
    code(&mut app, KeyCode::Right);
    code(&mut app, KeyCode::Tab);
    code(&mut app, KeyCode::Tab);
    for _ in 0.."lora-r4-repaired".len() {
        code(&mut app, KeyCode::Backspace);
    }
    let out = d.path().join("fixed");
    press(&mut app, out.to_str().unwrap());
    let cmds = code(&mut app, KeyCode::Enter);
    let [Cmd::Repair(req)] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        (req.lambda, req.scope, req.format, req.output.clone()),
        (
            0.5,
            lorascope::repair::Scope::All,
            lorascope::repair::Format::Adapter,
            out.clone()
        )
    );
    assert!(app.repair.running.is_some());
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = lorascope::tui::repair_job(&e, &app, req.clone(), tx, 2)().unwrap();
    assert!(rx.try_iter().count() > 0, "progress was reported");
    assert!(out.join("adapter_model.safetensors").is_file());
    let (before, after) = outcome.verification.totals();
    assert_eq!(before, 30, "the demo adapter's intruders");
    assert!(after < before, "{before} → {after}");
    assert_eq!(outcome.scaled, 30, "scope all at λ = 0.5 scales every one");
    app.on_repaired(Ok(outcome));
    assert!(app.repair.running.is_none());
    let s = screen(&app, Theme::new(Depth::C256), 80, 24);
    assert!(
        s.contains("30 intruders scaled") && s.contains("before  after"),
        "{s}"
    );
    press(&mut app, "x");
    assert!(app.popup.is_none(), "any key closes the result");
    // The dialog remembers its values; a second run into the same folder is refused.
    press(&mut app, "R");
    let Some(Popup::Repair(form)) = &app.popup else {
        panic!()
    };
    assert_eq!(form.lambda, "0.5");
    let Cmd::Repair(req) = code(&mut app, KeyCode::Enter).remove(0) else {
        panic!()
    };
    let (tx, _rx) = std::sync::mpsc::channel();
    let err = lorascope::tui::repair_job(&e, &app, req, tx, 2)().unwrap_err();
    assert!(err.contains("exists"), "{err}");
}

#[test]
fn several_runs_switch_by_number_and_compare_one_matrix_in_every_run() {
    use lorascope::tui::app::{Popup, RunBar};
    let d = tempfile::tempdir().unwrap();
    let p = lorascope::demo::ensure(d.path()).unwrap();
    let open = |tuned: &Path| {
        let inputs = Inputs::open(&p.base, tuned, &Selection::default()).unwrap();
        Engine::new(inputs, Cache::disabled(), Options::default())
    };
    let (lora, full) = (open(&p.lora), open(&p.full));
    let mut app = analysed(&lora);
    // One run: the run keys say how to give several.
    for k in ["2", "r", "c"] {
        assert!(press(&mut app, k).is_empty());
        assert!(
            app.message.as_deref().unwrap().contains("give several"),
            "{k}"
        );
    }
    app.runs = Some(RunBar {
        labels: vec!["lora".into(), "full".into(), "lora again".into()],
        active: 0,
        totals: vec![Some((app.total_intruders(), 24, 24)), None, None],
    });
    assert_eq!(press(&mut app, "2"), [Cmd::SwitchRun(1)]);
    assert_eq!(press(&mut app, "r"), [Cmd::SwitchRun(1)]);
    assert!(press(&mut app, "1").is_empty(), "the run shown");
    assert!(press(&mut app, "9").is_empty());
    assert_eq!(app.message.as_deref(), Some("no run 9 (runs 1–3)"));
    // The run bar: the shown run's count, `·` for runs not loaded yet.
    let s = screen(&app, Theme::new(Depth::C256), 80, 24);
    let bar = s.lines().nth(1).unwrap();
    assert!(
        bar.contains(" 1 lora 30 ")
            && bar.contains(" 2 full · ")
            && bar.ends_with(" 3 lora again ·"),
        "{bar}"
    );
    // The compare view: the selected matrix (one with intruders) in every run.
    press(&mut app, "n");
    press(&mut app, "l");
    let row = app.selected_row().unwrap();
    let name = app.rows[row].name.clone();
    assert_eq!(press(&mut app, "c"), [Cmd::Compare(name.clone())]);
    assert_eq!(app.popup, Some(Popup::Compare));
    let across = lorascope::compare::across(&[&lora, &full, &lora], 0, &name, lora.keep());
    let rows: Vec<_> = ["lora", "full", "lora again"]
        .iter()
        .map(|l| l.to_string())
        .zip(across.clone())
        .collect();
    app.on_compared("another.matrix", rows.clone());
    assert!(
        app.compare.as_ref().unwrap().rows.is_none(),
        "a late answer for another"
    );
    app.on_compared(&name, rows);
    let (a_lora, a_full) = (across[0].as_ref().unwrap(), across[1].as_ref().unwrap());
    // Independent checks: the run matched against itself finds each vector at its own rank;
    // the counts are the rule's on the scan's c_j.
    let own = &a_lora.matches[1].as_ref().unwrap();
    assert!((own.cos - 1.0).abs() < 1e-5 && own.rank == 1, "{own:?}");
    let scanned: Vec<f64> = app.report(row).unwrap().max_cos();
    assert_eq!(&a_lora.max_cos[..10], &scanned[..10]);
    let n_lora = app.rule.intruders(&a_lora.max_cos).len();
    let n_full = app.rule.intruders(&a_full.max_cos).len();
    assert!(n_lora > 0 && n_full == 0, "{n_lora} {n_full}");
    for (w, h) in [(80, 24), (60, 16)] {
        let s = screen(&app, Theme::new(Depth::C256), w, h);
        let line = |label: &str| {
            s.lines()
                .find(|l| l.contains(&format!("│{label} ")))
                .unwrap_or_else(|| panic!("{w}×{h}: no row for {label}:\n{s}"))
                .to_string()
        };
        let (l1, l2) = (line("lora"), line("full"));
        assert!(l1.contains(&format!(" {n_lora}  ")), "{l1}");
        assert!(l1.contains("1.00 at 1"), "{l1}");
        let m = a_full.matches[1].as_ref().unwrap();
        assert!(l2.contains(&format!("{:.2} at {}", m.cos, m.rank)), "{l2}");
        assert!(s.contains("←→ vector"), "{w}×{h}: clipped:\n{s}");
    }
    // ← → follow another vector; another key closes.
    press(&mut app, "l");
    assert_eq!(app.cursor_j, 2);
    press(&mut app, "x");
    assert!(app.popup.is_none() && app.compare.is_none());
}

#[test]
fn a_vector_with_zero_sigma_is_shown_as_such_never_an_intruder_and_cannot_be_flagged() {
    use crate::common::{f32_tensor, write_st, Rng, RngExt};
    let d = tempfile::tempdir().unwrap();
    let (b, t) = (
        d.path().join("b.safetensors"),
        d.path().join("t.safetensors"),
    );
    let w0 = Rng(5).vec(32 * 24, 1.0);
    write_st(&b, &[f32_tensor("l.0.q.weight", &[32, 24], &w0)]);
    write_st(
        &t,
        &[f32_tensor("l.0.q.weight", &[32, 24], &[0.0; 32 * 24])],
    );
    let inputs = Inputs::open(&b, &t, &Selection::new(&[".".into()], &[]).unwrap()).unwrap();
    let e = Engine::new(inputs, Cache::disabled(), Options::default());
    let mut app = analysed(&e);
    assert_eq!(app.total_intruders(), 0, "a zero matrix has no intruders");
    assert_eq!(app.selected_row(), Some(0));
    let s = screen(&app, Theme::new(Depth::C256), 160, 48);
    assert!(s.contains("σ≈0"), "{s}");
    assert!(!s.contains(" intr ") && !s.contains(" intr*"), "{s}");
    // Flagging one is refused with the reason; nothing stored.
    assert_eq!(press(&mut app, "f"), []);
    assert!(app.message.as_deref().unwrap().contains("σ ≈ 0"));
    assert_eq!((app.overrides(), app.total_intruders()), (0, 0));
}

#[test]
fn d_switches_between_the_paper_and_the_degenerate_aware_rule_live() {
    use lorascope::spectral::rule::RuleKind;
    let d = tempfile::tempdir().unwrap();
    let p = lorascope::demo::ensure(d.path()).unwrap();
    let inputs = Inputs::open(&p.base, &p.lora, &Selection::default()).unwrap();
    // Clusters wide enough to matter on the demo's smooth base spectra.
    let opts = Options {
        degenerate_tol: 0.1,
        ..Options::default()
    };
    let e = Engine::new(inputs, Cache::disabled(), opts);
    let mut app = analysed(&e);
    let paper = app.total_intruders();
    assert_eq!(paper, rule_total(&app, 10, 0.5));
    press(&mut app, "d");
    assert_eq!(app.rule.kind(), RuleKind::DegenerateAware);
    let aware = Rule::default().with_kind(RuleKind::DegenerateAware);
    let expected: usize = (0..app.rows.len())
        .map(|r| app.report(r).unwrap().intruders(&aware).len())
        .sum();
    assert_eq!(app.total_intruders(), expected);
    // A cluster holding the best single match projects at least as much: never more intruders.
    assert!(expected < paper, "{expected} vs {paper}");
    assert_ne!(
        app.curve_of(RuleKind::Paper),
        app.curve_of(RuleKind::DegenerateAware)
    );
    let s = screen(&app, Theme::new(Depth::C256), 120, 40);
    assert!(s.contains("ε=0.50 degenerate-aware"), "{s}");
    press(&mut app, "d");
    assert_eq!(
        (app.rule.kind(), app.total_intruders()),
        (RuleKind::Paper, paper)
    );
}
