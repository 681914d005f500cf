//! Colours, decided once: `--color auto|truecolor|256|16|never`, `NO_COLOR`, `--theme
//! dark|light`. Over SSH `COLORTERM` is usually lost, so `auto` often means 256 colours: every
//! colour here has a hand-checked 256- and 16-colour form, tested to keep its hue.

use ratatui::style::{Color, Modifier, Style};

/// `--color`: `auto` decides from the environment ([`Depth::detect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Truecolor,
    Ansi256,
    Ansi16,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    True,
    C256,
    C16,
    Mono,
}

impl Depth {
    /// What `auto` means, from the environment as terminal tools read it. Not the
    /// `supports-color` crate: it reads the process environment (untestable here) and takes
    /// `TERM=screen`/`tmux` for 16 colours, though tmux and screen pass 256.
    pub fn detect(choice: ColorChoice, env: &dyn Fn(&str) -> Option<String>) -> Depth {
        let set = |k: &str| env(k).filter(|v| !v.is_empty());
        match choice {
            ColorChoice::Truecolor => return Depth::True,
            ColorChoice::Ansi256 => return Depth::C256,
            ColorChoice::Ansi16 => return Depth::C16,
            ColorChoice::Never => return Depth::Mono,
            ColorChoice::Auto => {}
        }
        if set("NO_COLOR").is_some() {
            return Depth::Mono;
        }
        let term = set("TERM").unwrap_or_default();
        if term == "dumb" {
            return Depth::Mono;
        }
        if set("COLORTERM").is_some_and(|v| v == "truecolor" || v == "24bit")
            || term.ends_with("-direct")
            || term.contains("truecolor")
        {
            return Depth::True;
        }
        // Local terminals known to do 24-bit colour; tmux sets TERM_PROGRAM=tmux and is not one
        // of them (it passes truecolor only when configured to, and then sets COLORTERM).
        if set("TERM_PROGRAM").is_some_and(|p| {
            ["iTerm.app", "WezTerm", "vscode", "ghostty", "Hyper"].contains(&p.as_str())
        }) {
            return Depth::True;
        }
        if term.contains("256color") || term.starts_with("screen") || term.starts_with("tmux") {
            return Depth::C256;
        }
        // The Linux console and old terminals have 8 colours (16 with bold).
        if term == "linux" || term.starts_with("vt") || term == "ansi" || term.starts_with("cons") {
            return Depth::C16;
        }
        // A plain `xterm` or an unknown TERM: every terminal in use does 256.
        Depth::C256
    }
}

/// The terminal's background, for UI text and borders (`--theme`); the heatmap's ramp reads on
/// both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Background {
    #[default]
    Dark,
    Light,
}

/// viridis, 16 steps (perceptually uniform, colour-blind safe).
pub const RAMP: [(u8, u8, u8); 16] = [
    (68, 1, 84),
    (72, 26, 108),
    (71, 47, 125),
    (65, 68, 135),
    (57, 86, 140),
    (49, 104, 142),
    (42, 120, 142),
    (35, 136, 142),
    (31, 152, 139),
    (34, 168, 132),
    (53, 183, 121),
    (84, 197, 104),
    (122, 209, 81),
    (165, 219, 54),
    (210, 226, 27),
    (253, 231, 37),
];

/// The ramp in the xterm palette. Nearest colours collapse viridis's 16 steps into 10 (its
/// blues fall between the cube's levels), so these were chosen as the closest run of 16
/// distinct, non-grey entries whose lightness rises strictly, each within 30 of its step in
/// CIELAB hue; the tests check all three.
pub const RAMP_256: [u8; 16] = [
    17, 53, 54, 25, 60, 31, 66, 37, 73, 108, 42, 78, 113, 148, 184, 220,
];

/// The ramp in 16 colours: 8 distinct steps along viridis's hues (two ramp steps each), none of
/// them red, the intruder's colour.
pub const RAMP_16: [Color; 8] = [
    Color::Magenta,
    Color::Blue,
    Color::LightBlue,
    Color::Cyan,
    Color::Green,
    Color::LightGreen,
    Color::Yellow,
    Color::LightYellow,
];

/// Density glyphs for the heatmap without colour.
pub const MONO_RAMP: [char; 8] = [' ', '·', ':', '-', '=', '+', '#', '@'];

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub depth: Depth,
    pub background: Background,
}

/// The xterm palette's entry `i` (16…255) as RGB.
pub fn xterm_rgb(i: u8) -> (u8, u8, u8) {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    match i {
        16..=231 => {
            let c = i - 16;
            (
                LEVELS[(c / 36) as usize],
                LEVELS[(c / 6 % 6) as usize],
                LEVELS[(c % 6) as usize],
            )
        }
        232..=255 => {
            let v = 8 + 10 * (i - 232);
            (v, v, v)
        }
        // The system colours vary by terminal; callers never produce them.
        _ => (0, 0, 0),
    }
}

/// Nearest entry of the 6×6×6 cube or the grey ramp, by squared error on each channel (a grey
/// is compared with r, g and b, not with their mean, or every saturated colour turns grey).
/// In closed form, as it runs for every styled cell: the cube is a product of levels, so its
/// nearest entry takes each channel's nearest level; the greys' error is a parabola in the
/// grey, so the nearest grey to the mean is theirs. A test checks it against a full search.
pub fn to_256(r: u8, g: u8, b: u8) -> u8 {
    const LEVELS: [i32; 6] = [0, 95, 135, 175, 215, 255];
    let level = |v: u8| {
        (0..6)
            .min_by_key(|&i| (LEVELS[i] - v as i32).abs())
            .unwrap_or(0)
    };
    let (ri, gi, bi) = (level(r), level(g), level(b));
    let cube = 16 + 36 * ri as u8 + 6 * gi as u8 + bi as u8;
    let mean = (r as i32 + g as i32 + b as i32) as f64 / 3.0;
    let grey = 232 + ((mean - 8.0) / 10.0).round().clamp(0.0, 23.0) as u8;
    let err = |i: u8| {
        let (x, y, z) = xterm_rgb(i);
        let d = |a: u8, c: u8| (a as i32 - c as i32).pow(2);
        d(x, r) + d(y, g) + d(z, b)
    };
    if err(grey) < err(cube) {
        grey
    } else {
        cube
    }
}

/// The 16-colour form: the nearest of the eight hues by which channels are on, brighter when
/// light. Greys go to black, grey or white.
pub fn to_16(r: u8, g: u8, b: u8) -> Color {
    let (mx, mn) = (r.max(g).max(b) as i32, r.min(g).min(b) as i32);
    if mx - mn < 40 {
        return match mx {
            0..=60 => Color::Black,
            61..=140 => Color::DarkGray,
            141..=210 => Color::Gray,
            _ => Color::White,
        };
    }
    // A channel is on when it is near the strongest one.
    let on = |v: u8| v as i32 * 2 > mx + mn;
    let bright = mx > 200 && mn > 60;
    match (on(r), on(g), on(b), bright) {
        (true, false, false, false) => Color::Red,
        (true, false, false, true) => Color::LightRed,
        (false, true, false, false) => Color::Green,
        (false, true, false, true) => Color::LightGreen,
        (true, true, false, false) => Color::Yellow,
        (true, true, false, true) => Color::LightYellow,
        (false, false, true, false) => Color::Blue,
        (false, false, true, true) => Color::LightBlue,
        (true, false, true, false) => Color::Magenta,
        (true, false, true, true) => Color::LightMagenta,
        (false, true, true, false) => Color::Cyan,
        (false, true, true, true) => Color::LightCyan,
        _ => Color::Gray,
    }
}

/// The UI's colours on one background, as RGB; [`Theme`] turns them into the terminal's depth.
struct Palette {
    intruder: (u8, u8, u8),
    flagged: (u8, u8, u8),
    dim: (u8, u8, u8),
    base: (u8, u8, u8),
    tuned: (u8, u8, u8),
    focus: (u8, u8, u8),
}

const DARK: Palette = Palette {
    intruder: (255, 85, 85),
    flagged: (255, 121, 198),
    dim: (140, 140, 140),
    base: (120, 160, 220),
    tuned: (120, 200, 140),
    focus: (250, 200, 80),
};

/// Darker, saturated forms that read on a white background.
const LIGHT: Palette = Palette {
    intruder: (190, 0, 0),
    flagged: (170, 0, 140),
    dim: (100, 100, 100),
    base: (30, 90, 180),
    tuned: (20, 130, 60),
    focus: (180, 100, 0),
};

impl Theme {
    pub fn new(depth: Depth) -> Theme {
        Theme {
            depth,
            background: Background::Dark,
        }
    }

    pub fn on(self, background: Background) -> Theme {
        Theme { background, ..self }
    }

    fn palette(&self) -> &'static Palette {
        match self.background {
            Background::Dark => &DARK,
            Background::Light => &LIGHT,
        }
    }

    pub fn rgb(&self, r: u8, g: u8, b: u8) -> Color {
        match self.depth {
            Depth::True => Color::Rgb(r, g, b),
            Depth::C256 => Color::Indexed(to_256(r, g, b)),
            Depth::C16 => to_16(r, g, b),
            Depth::Mono => Color::Reset,
        }
    }

    fn fg(&self, (r, g, b): (u8, u8, u8)) -> Style {
        Style::new().fg(self.rgb(r, g, b))
    }

    pub fn colored(&self) -> bool {
        self.depth != Depth::Mono
    }

    /// Heat colour for |cos| in [0, 1].
    pub fn heat(&self, v: f32) -> Color {
        let s = ramp_index(v, RAMP.len());
        match self.depth {
            Depth::True => {
                let (r, g, b) = RAMP[s];
                Color::Rgb(r, g, b)
            }
            Depth::C256 => Color::Indexed(RAMP_256[s]),
            Depth::C16 => RAMP_16[s * RAMP_16.len() / RAMP.len()],
            Depth::Mono => Color::Reset,
        }
    }

    /// Distinct heat colours the ramp has at this depth (the legend shows each once).
    pub fn heat_steps(&self) -> usize {
        match self.depth {
            Depth::C16 => RAMP_16.len(),
            Depth::Mono => MONO_RAMP.len(),
            _ => RAMP.len(),
        }
    }

    pub fn intruder(&self) -> Style {
        if self.colored() {
            self.fg(self.palette().intruder)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        }
    }
    pub fn flagged(&self) -> Style {
        if self.colored() {
            self.fg(self.palette().flagged).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::ITALIC)
        }
    }
    pub fn dim(&self) -> Style {
        if self.colored() {
            self.fg(self.palette().dim)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }
    pub fn base_series(&self) -> Style {
        self.fg(self.palette().base)
    }
    pub fn tuned_series(&self) -> Style {
        self.fg(self.palette().tuned)
    }
    pub fn focus_border(&self) -> Style {
        if self.colored() {
            self.fg(self.palette().focus).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    /// The heatmap's cursor cell: white on dark, black on light.
    pub fn cursor(&self) -> Color {
        match (self.colored(), self.background) {
            (false, _) => Color::Reset,
            (true, Background::Dark) => Color::White,
            (true, Background::Light) => Color::Black,
        }
    }

    /// Every UI colour of this theme as RGB, with its name (for tests and the pictures).
    pub fn named_colors(&self) -> [(&'static str, (u8, u8, u8)); 6] {
        let p = self.palette();
        [
            ("intruder", p.intruder),
            ("flagged", p.flagged),
            ("dim", p.dim),
            ("base", p.base),
            ("tuned", p.tuned),
            ("focus", p.focus),
        ]
    }
}

pub fn ramp_index(v: f32, n: usize) -> usize {
    ((v.clamp(0.0, 1.0) * n as f32) as usize).min(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(a, _)| *a == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn auto_reads_no_color_colorterm_term_and_term_program() {
        let auto = |pairs| Depth::detect(ColorChoice::Auto, &env(pairs));
        let cases: &[(&'static [(&str, &str)], Depth)] = &[
            (
                &[("NO_COLOR", "1"), ("COLORTERM", "truecolor")],
                Depth::Mono,
            ),
            // An empty NO_COLOR does not count (no-color.org).
            (&[("NO_COLOR", ""), ("TERM", "xterm-256color")], Depth::C256),
            (&[("COLORTERM", "truecolor")], Depth::True),
            (
                &[("COLORTERM", "24bit"), ("TERM", "tmux-256color")],
                Depth::True,
            ),
            // Over SSH: no COLORTERM.
            (&[("TERM", "xterm-256color")], Depth::C256),
            (&[("TERM", "screen")], Depth::C256),
            (
                &[("TERM", "tmux-256color"), ("TERM_PROGRAM", "tmux")],
                Depth::C256,
            ),
            (&[("TERM", "xterm-direct")], Depth::True),
            (
                &[("TERM", "xterm-256color"), ("TERM_PROGRAM", "WezTerm")],
                Depth::True,
            ),
            (&[("TERM", "linux")], Depth::C16),
            (&[("TERM", "vt220")], Depth::C16),
            (&[("TERM", "dumb"), ("COLORTERM", "truecolor")], Depth::Mono),
            (&[("TERM", "xterm")], Depth::C256),
            (&[], Depth::C256),
        ];
        for (pairs, want) in cases {
            assert_eq!(auto(pairs), *want, "{pairs:?}");
        }
        // An explicit choice wins over the environment.
        let forced = Depth::detect(ColorChoice::Ansi16, &env(&[("NO_COLOR", "1")]));
        assert_eq!(forced, Depth::C16);
    }

    /// CIELAB (D65) of an sRGB colour: lightness and the a*, b* plane that carries hue.
    fn lab((r, g, b): (u8, u8, u8)) -> (f64, f64, f64) {
        let lin = |u: u8| {
            let u = u as f64 / 255.0;
            if u <= 0.04045 {
                u / 12.92
            } else {
                ((u + 0.055) / 1.055).powf(2.4)
            }
        };
        let (r, g, b) = (lin(r), lin(g), lin(b));
        let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
        let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
        let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
        let f = |t: f64| {
            if t > 0.008856 {
                t.cbrt()
            } else {
                7.787 * t + 16.0 / 116.0
            }
        };
        let (fx, fy, fz) = (f(x), f(y), f(z));
        (116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz))
    }

    fn hue_deg(c: (u8, u8, u8)) -> f64 {
        let (_, a, b) = lab(c);
        b.atan2(a).to_degrees()
    }

    fn chroma(c: (u8, u8, u8)) -> f64 {
        let (_, a, b) = lab(c);
        a.hypot(b)
    }

    fn angle(a: f64, b: f64) -> f64 {
        let d = (a - b).rem_euclid(360.0);
        d.min(360.0 - d)
    }

    #[test]
    fn the_closed_form_256_mapping_finds_the_nearest_entry() {
        let search = |r: u8, g: u8, b: u8| {
            let err = |i: u8| {
                let (x, y, z) = xterm_rgb(i);
                let d = |a: u8, c: u8| (a as i32 - c as i32).pow(2);
                d(x, r) + d(y, g) + d(z, b)
            };
            (16..=255u8).map(err).min().unwrap()
        };
        for r in (0..=255u8).step_by(5) {
            for g in (0..=255u8).step_by(5) {
                for b in (0..=255u8).step_by(5) {
                    let (x, y, z) = xterm_rgb(to_256(r, g, b));
                    let d = |a: u8, c: u8| (a as i32 - c as i32).pow(2);
                    let got = d(x, r) + d(y, g) + d(z, b);
                    assert_eq!(got, search(r, g, b), "({r}, {g}, {b})");
                }
            }
        }
    }

    #[test]
    fn the_256_colour_forms_keep_every_theme_colours_hue() {
        // The old mapping compared greys with the mean of r, g, b: (255, 85, 85) became grey.
        assert_eq!(to_256(255, 85, 85), 203);
        assert_eq!(to_256(255, 0, 0), 196);
        assert_eq!(to_256(0, 0, 0), 16);
        assert_eq!(to_256(128, 128, 128), 244);
        for bg in [Background::Dark, Background::Light] {
            for (name, c) in Theme::new(Depth::C256).on(bg).named_colors() {
                let Color::Indexed(i) = Theme::new(Depth::C256).rgb(c.0, c.1, c.2) else {
                    panic!("{name}: not indexed");
                };
                let got = xterm_rgb(i);
                if chroma(c) < 10.0 {
                    // A grey stays a grey of about the same lightness.
                    assert!(chroma(got) < 10.0, "{bg:?} {name}: {c:?} → {i} {got:?}");
                } else {
                    assert!(
                        chroma(got) > 0.5 * chroma(c),
                        "{bg:?} {name} greyed: {c:?} → {i}"
                    );
                    let d = angle(hue_deg(c), hue_deg(got));
                    assert!(
                        d < 20.0,
                        "{bg:?} {name}: {c:?} → {i} {got:?}, hue off by {d:.0}°"
                    );
                }
                assert!(
                    (lab(c).0 - lab(got).0).abs() < 12.0,
                    "{bg:?} {name} lightness"
                );
            }
        }
    }

    /// WCAG contrast ratio of two sRGB colours.
    fn contrast(a: (u8, u8, u8), b: (u8, u8, u8)) -> f64 {
        let lum = |(r, g, b): (u8, u8, u8)| {
            let lin = |u: u8| {
                let u = u as f64 / 255.0;
                if u <= 0.04045 {
                    u / 12.92
                } else {
                    ((u + 0.055) / 1.055).powf(2.4)
                }
            };
            0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
        };
        let (x, y) = (lum(a), lum(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    #[test]
    fn each_theme_reads_on_its_background_also_in_256_colours() {
        for (bg, paper) in [
            (Background::Dark, (0, 0, 0)),
            (Background::Light, (255, 255, 255)),
        ] {
            for (name, c) in Theme::new(Depth::True).on(bg).named_colors() {
                let Color::Indexed(i) = Theme::new(Depth::C256).rgb(c.0, c.1, c.2) else {
                    unreachable!()
                };
                for (what, col) in [("truecolor", c), ("256", xterm_rgb(i))] {
                    let r = contrast(col, paper);
                    // WCAG's 3:1 for large or bold text and UI parts; every one is above it.
                    assert!(r >= 3.0, "{bg:?} {name} in {what}: {col:?} contrast {r:.2}");
                }
            }
        }
    }

    #[test]
    fn the_16_colour_forms_keep_the_hue_family() {
        let t = Theme::new(Depth::C16);
        let want = [
            ("intruder", [Color::Red, Color::LightRed]),
            ("flagged", [Color::Magenta, Color::LightMagenta]),
            ("dim", [Color::DarkGray, Color::Gray]),
            ("base", [Color::Blue, Color::LightBlue]),
            ("tuned", [Color::Green, Color::LightGreen]),
            ("focus", [Color::Yellow, Color::LightYellow]),
        ];
        for bg in [Background::Dark, Background::Light] {
            for ((name, c), (wname, ok)) in t.on(bg).named_colors().into_iter().zip(want) {
                assert_eq!(name, wname);
                let got = t.rgb(c.0, c.1, c.2);
                assert!(ok.contains(&got), "{bg:?} {name}: {c:?} → {got:?}");
            }
        }
    }

    #[test]
    fn every_ramp_step_stays_distinct_ordered_and_near_viridis_in_256_and_16_colours() {
        let t = Theme::new(Depth::C256);
        let steps: Vec<f32> = (0..RAMP.len())
            .map(|s| (s as f32 + 0.5) / RAMP.len() as f32)
            .collect();
        let idx: Vec<u8> = steps
            .iter()
            .map(|&v| match t.heat(v) {
                Color::Indexed(i) => i,
                c => panic!("{c:?}"),
            })
            .collect();
        let distinct: std::collections::BTreeSet<_> = idx.iter().collect();
        assert_eq!(distinct.len(), RAMP.len(), "{idx:?}");
        for (s, &i) in idx.iter().enumerate() {
            let got = xterm_rgb(i);
            assert!(
                (16..232).contains(&i),
                "step {s}: {i} is not in the colour cube"
            );
            assert!(chroma(got) > 10.0, "step {s}: {i} is grey");
            let (l0, a0, b0) = lab(RAMP[s]);
            let (l1, a1, b1) = lab(got);
            assert!((a0 - a1).hypot(b0 - b1) <= 30.0, "step {s}: {i} hue");
            assert!((l0 - l1).abs() <= 20.0, "step {s}: {i} lightness");
            if s > 0 {
                assert!(
                    l1 > lab(xterm_rgb(idx[s - 1])).0,
                    "step {s}: lightness must rise"
                );
            }
        }
        // 16 colours: each of the 8 colours in order, none red (the intruder's colour).
        let t = Theme::new(Depth::C16);
        let c16: Vec<Color> = steps.iter().map(|&v| t.heat(v)).collect();
        let mut runs = c16.clone();
        runs.dedup();
        assert_eq!(runs, RAMP_16);
        assert!(!c16.contains(&Color::Red) && !c16.contains(&Color::LightRed));
        assert_eq!(t.heat_steps(), 8);
        // Truecolor is viridis itself.
        assert_eq!(Theme::new(Depth::True).heat(0.0), Color::Rgb(68, 1, 84));
        assert_eq!(ramp_index(0.0, 16), 0);
        assert_eq!(ramp_index(1.0, 16), 15);
        assert_eq!(ramp_index(0.5, 16), 8);
    }
}
