//! `cargo bench --bench render`: one explorer frame at 160×48 on a TestBackend (layout, every
//! widget, the buffer diff; no terminal I/O), with the heatmap filled: the main screen and the
//! zoomed heatmap, on the demo's analysed matrices; and in 256 colours (as over SSH) at 80×24
//! and 200×60. Target: ≤ 2 ms a frame.

use lorascope::cache::Cache;
use lorascope::checkpoint::{Inputs, Selection};
use lorascope::engine::{Engine, Options};
use lorascope::tui::app::{App, UserState};
use lorascope::tui::theme::{Depth, Theme};
use lorascope::tui::{build_app, ui, worker};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

fn main() {
    divan::main();
}

/// The demo with every matrix analysed, the first one with intruders selected, its heatmap at
/// the largest view (all 128 tuned vectors of the demo × every base vector).
fn app(zoom: bool) -> (tempfile::TempDir, App) {
    let dir = tempfile::tempdir().unwrap();
    let p = lorascope::demo::ensure(dir.path()).unwrap();
    let inputs = Inputs::open(&p.base, &p.lora, &Selection::default()).unwrap();
    let opts = Options {
        keep: 200,
        ..Options::default()
    };
    let engine = Engine::new(inputs, Cache::disabled(), opts);
    let mut app = build_app(
        &engine,
        lorascope::spectral::Rule::default(),
        UserState::default(),
    );
    for (i, p) in engine.matrices().into_iter().enumerate() {
        let (r, ..) = engine.analyze_with_decompositions(p).unwrap();
        app.on_done(i, Ok(std::sync::Arc::new(r)));
    }
    let key = |app: &mut App, c: KeyCode| {
        app.on_key(KeyEvent::new(c, KeyModifiers::NONE));
    };
    key(&mut app, KeyCode::Char('n'));
    let row = app.selected_row().unwrap();
    let (b, t) = engine.decompositions_of(engine.matrices()[row]).unwrap();
    app.on_heat(worker::heat_of(row, &b, &t));
    app.heatmap.k = lorascope::tui::app::HEAT_MAX;
    if zoom {
        key(&mut app, KeyCode::Tab);
        key(&mut app, KeyCode::Tab);
        key(&mut app, KeyCode::Enter);
    }
    (dir, app)
}

fn frame(bencher: divan::Bencher, zoom: bool, depth: Depth) {
    frame_at(bencher, zoom, depth, (160, 48));
}

fn frame_at(bencher: divan::Bencher, zoom: bool, depth: Depth, (w, h): (u16, u16)) {
    let (_dir, mut app) = app(zoom);
    app.size = ratatui::layout::Rect::new(0, 0, w, h);
    let theme = Theme::new(depth);
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    bencher.bench_local(|| {
        term.draw(|f| ui::render(&app, &theme, f)).unwrap();
    });
}

#[divan::bench]
fn main_160x48_truecolor(b: divan::Bencher) {
    frame(b, false, Depth::True);
}

#[divan::bench]
fn zoomed_heatmap_160x48_truecolor(b: divan::Bencher) {
    frame(b, true, Depth::True);
}

#[divan::bench]
fn zoomed_heatmap_160x48_256_colours(b: divan::Bencher) {
    frame(b, true, Depth::C256);
}

// Over SSH: 256 colours, at the smallest designed size and a large one.
#[divan::bench]
fn main_80x24_256_colours(b: divan::Bencher) {
    frame_at(b, false, Depth::C256, (80, 24));
}

#[divan::bench]
fn main_200x60_256_colours(b: divan::Bencher) {
    frame_at(b, false, Depth::C256, (200, 60));
}

#[divan::bench]
fn zoomed_heatmap_200x60_256_colours(b: divan::Bencher) {
    frame_at(b, true, Depth::C256, (200, 60));
}
