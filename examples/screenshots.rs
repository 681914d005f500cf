//! The README's pictures, from real runs of the demo: the explorer's screens drawn on ratatui's
//! test backend in 256 colours (what SSH gives) and written as SVG, and the demo's HTML report.
//! Run by `scripts/screenshots.sh`: `cargo run --release --example screenshots -- OUT_DIR`.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use lorascope::cache::Cache;
use lorascope::checkpoint::{Inputs, Selection};
use lorascope::engine::{Engine, Options};
use lorascope::flags::UserState;
use lorascope::spectral::Rule;
use lorascope::tui::app::App;
use lorascope::tui::theme::{xterm_rgb, Depth, Theme};
use lorascope::tui::{build_app, ui, worker};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;

const FG: (u8, u8, u8) = (208, 208, 208);
const BG: (u8, u8, u8) = (28, 28, 28);
const CELL_W: f32 = 8.4;
const CELL_H: f32 = 17.0;

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "assets".into());
    let out = Path::new(&out);
    std::fs::create_dir_all(out).unwrap();
    let out = std::path::absolute(out).unwrap();
    let out = out.as_path();
    // The demo in a temporary folder, named relatively so the pictures show no machine's paths.
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let demo = lorascope::demo::ensure(Path::new(".")).unwrap();
    let inputs = Inputs::open(&demo.base, &demo.lora, &Selection::default()).unwrap();
    let engine = Engine::new(inputs, Cache::disabled(), Options::default());
    let mut app = build_app(&engine, Rule::default(), UserState::default());
    for (i, p) in engine.matrices().into_iter().enumerate() {
        let (r, ..) = engine.analyze_with_decompositions(p).unwrap();
        app.on_done(i, Ok(Arc::new(r)));
    }
    let theme = Theme::new(Depth::C256);
    // The first matrix with intruders, the cursor on its first intruder.
    key(&mut app, KeyCode::Char('n'));
    let row = app.selected_row().unwrap();
    let (b, t) = engine.decompositions_of(engine.matrices()[row]).unwrap();
    app.on_heat(worker::heat_of(row, &b, &t));
    key(&mut app, KeyCode::Char('l'));
    key(&mut app, KeyCode::Char('l'));
    save(out, "explorer", &app, &theme, 120, 36);
    save(out, "explorer-80x24", &app, &theme, 80, 24);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('z'));
    save(out, "heatmap", &app, &theme, 120, 36);
    key(&mut app, KeyCode::Char('z'));
    key(&mut app, KeyCode::Char('o'));
    save(out, "overview", &app, &theme, 120, 36);
    key(&mut app, KeyCode::Char('o'));

    // Several runs: the run bar and the compare view (`c`) on the selected matrix, with the
    // demo's adapter, its full fine-tune and the adapter again.
    let full = Engine::new(
        Inputs::open(&demo.base, &demo.full, &Selection::default()).unwrap(),
        Cache::disabled(),
        Options::default(),
    );
    let labels = ["lora-r4", "full-ft", "lora-r4 (again)"];
    app.runs = Some(lorascope::tui::app::RunBar {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        active: 0,
        totals: vec![
            Some((app.total_intruders(), 24, 24)),
            Some((0, 24, 24)),
            None,
        ],
    });
    key(&mut app, KeyCode::Char('c'));
    let name = app.rows[app.selected_row().unwrap()].name.clone();
    let across = lorascope::compare::across(&[&engine, &full, &engine], 0, &name, engine.keep());
    app.on_compared(
        &name,
        labels.iter().map(|l| l.to_string()).zip(across).collect(),
    );
    save(out, "runs", &app, &theme, 120, 36);
    key(&mut app, KeyCode::Esc);
    app.runs = None;

    // The demo's HTML report, for the script to photograph in a browser.
    let scan = app.as_scan();
    let names: Vec<String> = app.export_set();
    let select =
        |name: &str, _: usize| names.iter().any(|n| n == name) || name.contains("layers.3.");
    let results = lorascope::report::Results::new(
        &engine,
        &scan,
        &app.user,
        &Rule::default(),
        app.rows.len(),
    );
    let r = lorascope::report::build(
        &engine,
        results,
        &select,
        "2026-01-01T00:00:00Z",
        engine.keep(),
    );
    let html = lorascope::report::ReportFormat::Html.render(&r);
    std::fs::write(out.join("report.html"), html).unwrap();

    // The comparison report of the demo's two fine-tunes.
    let specs = lorascope::compare::expand(
        &[demo.full.clone(), demo.lora.clone()],
        &["full fine-tune".into(), "LoRA r=4".into()],
    )
    .unwrap();
    let runs = specs
        .into_iter()
        .map(|s| {
            let inputs = Inputs::open(&demo.base, &s.path, &Selection::default()).unwrap();
            (
                s,
                Ok(Engine::new(inputs, Cache::disabled(), Options::default())),
            )
        })
        .collect();
    let settings = lorascope::compare::Settings {
        rule: Rule::default(),
        reference: 1,
        keep: lorascope::engine::DEFAULT_KEEP,
        show: lorascope::compare::Show::Default,
    };
    let c = lorascope::compare::compare(runs, settings, &|_| 2, &|_, _| {}, &|_| {}).unwrap();
    std::fs::write(out.join("compare.html"), c.html("2026-01-01T00:00:00Z")).unwrap();
    eprintln!("wrote {}", out.display());
}

fn key(app: &mut App, c: KeyCode) {
    app.on_key(KeyEvent::new(c, KeyModifiers::NONE));
}

fn save(out: &Path, name: &str, app: &App, theme: &Theme, w: u16, h: u16) {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| ui::render(app, theme, f)).unwrap();
    let svg = to_svg(term.backend().buffer());
    std::fs::write(out.join(format!("{name}.svg")), svg).unwrap();
}

fn rgb(c: Color, default: (u8, u8, u8)) -> (u8, u8, u8) {
    // The xterm defaults for the 16 system colours.
    const SYSTEM: [(u8, u8, u8); 16] = [
        (0, 0, 0),
        (205, 0, 0),
        (0, 205, 0),
        (205, 205, 0),
        (0, 0, 238),
        (205, 0, 205),
        (0, 205, 205),
        (229, 229, 229),
        (127, 127, 127),
        (255, 0, 0),
        (0, 255, 0),
        (255, 255, 0),
        (92, 92, 255),
        (255, 0, 255),
        (0, 255, 255),
        (255, 255, 255),
    ];
    match c {
        Color::Reset => default,
        Color::Rgb(r, g, b) => (r, g, b),
        Color::Indexed(i) if i >= 16 => xterm_rgb(i),
        Color::Indexed(i) => SYSTEM[i as usize],
        Color::Black => SYSTEM[0],
        Color::Red => SYSTEM[1],
        Color::Green => SYSTEM[2],
        Color::Yellow => SYSTEM[3],
        Color::Blue => SYSTEM[4],
        Color::Magenta => SYSTEM[5],
        Color::Cyan => SYSTEM[6],
        Color::Gray => SYSTEM[7],
        Color::DarkGray => SYSTEM[8],
        Color::LightRed => SYSTEM[9],
        Color::LightGreen => SYSTEM[10],
        Color::LightYellow => SYSTEM[11],
        Color::LightBlue => SYSTEM[12],
        Color::LightMagenta => SYSTEM[13],
        Color::LightCyan => SYSTEM[14],
        Color::White => SYSTEM[15],
    }
}

fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// One rect per cell background, block glyphs as rects (fonts draw them unevenly), the rest
/// as text placed cell by cell.
fn to_svg(buf: &Buffer) -> String {
    let (w, h) = (buf.area.width, buf.area.height);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="DejaVu Sans Mono,Menlo,Consolas,monospace" font-size="14">"#,
        w as f32 * CELL_W,
        h as f32 * CELL_H
    );
    let _ = write!(
        s,
        r#"<rect width="100%" height="100%" fill="{}"/>"#,
        hex(BG)
    );
    for y in 0..h {
        for x in 0..w {
            let c = &buf[(x, y)];
            let (mut fg, mut bg) = (rgb(c.fg, FG), rgb(c.bg, BG));
            if c.modifier.contains(Modifier::REVERSED) {
                std::mem::swap(&mut fg, &mut bg);
            }
            let (px, py) = (x as f32 * CELL_W, y as f32 * CELL_H);
            let rect = |s: &mut String, top: f32, height: f32, col: (u8, u8, u8)| {
                let _ = write!(
                    s,
                    r#"<rect x="{px:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" fill="{}"/>"#,
                    py + top,
                    CELL_W + 0.3,
                    hex(col)
                );
            };
            if bg != BG {
                rect(&mut s, 0.0, CELL_H + 0.3, bg);
            }
            let sym = c.symbol();
            let eighths = "▁▂▃▄▅▆▇█".chars().position(|b| sym.starts_with(b));
            match (sym, eighths) {
                ("▀", _) => rect(&mut s, 0.0, CELL_H / 2.0, fg),
                (_, Some(n)) => {
                    let hgt = CELL_H * (n + 1) as f32 / 8.0;
                    rect(&mut s, CELL_H - hgt, hgt, fg);
                }
                (" ", _) | ("", _) => {}
                _ => {
                    let esc = sym
                        .replace('&', "&amp;")
                        .replace('<', "&lt;")
                        .replace('>', "&gt;");
                    let bold = if c.modifier.contains(Modifier::BOLD) {
                        r#" font-weight="bold""#
                    } else {
                        ""
                    };
                    let _ = write!(
                        s,
                        r#"<text x="{px:.1}" y="{:.1}" fill="{}"{bold}>{esc}</text>"#,
                        py + CELL_H * 0.78,
                        hex(fg)
                    );
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}
