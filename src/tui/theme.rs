//! Colours, decided once: `--color auto|truecolor|256|16|never`, `NO_COLOR`, and a 256-colour
//! fallback because SSH usually hides `COLORTERM`.

use ratatui::style::{Color, Modifier, Style};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Truecolor,
    #[value(name = "256")]
    Ansi256,
    #[value(name = "16")]
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
    pub fn detect(choice: ColorChoice, env: &dyn Fn(&str) -> Option<String>) -> Depth {
        match choice {
            ColorChoice::Truecolor => Depth::True,
            ColorChoice::Ansi256 => Depth::C256,
            ColorChoice::Ansi16 => Depth::C16,
            ColorChoice::Never => Depth::Mono,
            ColorChoice::Auto => {
                if env("NO_COLOR").is_some_and(|v| !v.is_empty()) {
                    Depth::Mono
                } else if env("COLORTERM").is_some_and(|v| v == "truecolor" || v == "24bit") {
                    Depth::True
                } else if env("TERM").is_some_and(|t| t == "dumb") {
                    Depth::Mono
                } else {
                    // Most terminals reached over SSH/tmux do 256 colours.
                    Depth::C256
                }
            }
        }
    }
}

/// viridis, 16 steps.
const RAMP: [(u8, u8, u8); 16] = [
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
/// Density glyphs for the heatmap without colour.
pub const MONO_RAMP: [char; 8] = [' ', '·', ':', '-', '=', '+', '#', '@'];

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub depth: Depth,
}

fn to_256(r: u8, g: u8, b: u8) -> u8 {
    // Nearest of the 6×6×6 cube or the grey ramp.
    let level = |v: u8| -> (u8, i32) {
        let steps = [0, 95, 135, 175, 215, 255];
        let i = steps
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (**s - v as i32).abs())
            .unwrap()
            .0;
        (i as u8, steps[i])
    };
    let ((ri, rv), (gi, gv), (bi, bv)) = (level(r), level(g), level(b));
    let cube = 16 + 36 * ri + 6 * gi + bi;
    let cube_err = (rv - r as i32).pow(2) + (gv - g as i32).pow(2) + (bv - b as i32).pow(2);
    let avg = (r as i32 + g as i32 + b as i32) / 3;
    let gi = ((avg - 8).max(0) / 10).min(23);
    let gv = 8 + 10 * gi;
    let grey_err = 3 * (gv - avg).pow(2);
    if grey_err < cube_err {
        232 + gi as u8
    } else {
        cube
    }
}

fn to_16(r: u8, g: u8, b: u8) -> Color {
    let bright = (r as u16 + g as u16 + b as u16) > 382;
    let on = |v: u8| v > 100;
    match (on(r), on(g), on(b), bright) {
        (false, false, false, _) => Color::Black,
        (true, false, false, _) => Color::Red,
        (false, true, false, false) => Color::Green,
        (false, true, false, true) => Color::LightGreen,
        (true, true, false, _) => Color::Yellow,
        (false, false, true, _) => Color::Blue,
        (true, false, true, _) => Color::Magenta,
        (false, true, true, false) => Color::Cyan,
        (false, true, true, true) => Color::LightCyan,
        (true, true, true, _) => Color::White,
    }
}

impl Theme {
    pub fn new(depth: Depth) -> Theme {
        Theme { depth }
    }

    pub fn rgb(&self, r: u8, g: u8, b: u8) -> Color {
        match self.depth {
            Depth::True => Color::Rgb(r, g, b),
            Depth::C256 => Color::Indexed(to_256(r, g, b)),
            Depth::C16 => to_16(r, g, b),
            Depth::Mono => Color::Reset,
        }
    }

    pub fn colored(&self) -> bool {
        self.depth != Depth::Mono
    }

    /// Heat colour for |cos| in [0, 1].
    pub fn heat(&self, v: f32) -> Color {
        let (r, g, b) = RAMP[ramp_index(v, RAMP.len())];
        self.rgb(r, g, b)
    }

    pub fn intruder(&self) -> Style {
        if self.colored() {
            Style::new()
                .fg(self.rgb(255, 85, 85))
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        }
    }
    pub fn flagged(&self) -> Style {
        if self.colored() {
            Style::new()
                .fg(self.rgb(255, 121, 198))
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::ITALIC)
        }
    }
    pub fn dim(&self) -> Style {
        if self.colored() {
            Style::new().fg(self.rgb(140, 140, 140))
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }
    pub fn base_series(&self) -> Style {
        Style::new().fg(self.rgb(120, 160, 220))
    }
    pub fn tuned_series(&self) -> Style {
        Style::new().fg(self.rgb(120, 200, 140))
    }
    pub fn focus_border(&self) -> Style {
        if self.colored() {
            Style::new().fg(self.rgb(250, 200, 80))
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
}

pub fn ramp_index(v: f32, n: usize) -> usize {
    ((v.clamp(0.0, 1.0) * n as f32) as usize).min(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_honours_no_color_and_falls_back_to_256() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            Depth::detect(
                ColorChoice::Auto,
                &env(&[("NO_COLOR", "1"), ("COLORTERM", "truecolor")])
            ),
            Depth::Mono
        );
        assert_eq!(
            Depth::detect(ColorChoice::Auto, &env(&[("COLORTERM", "truecolor")])),
            Depth::True
        );
        assert_eq!(
            Depth::detect(ColorChoice::Auto, &env(&[("TERM", "xterm-256color")])),
            Depth::C256
        );
        assert_eq!(
            Depth::detect(ColorChoice::Ansi16, &env(&[("NO_COLOR", "1")])),
            Depth::C16
        );
    }

    #[test]
    fn rgb_to_256_hits_cube_and_grey() {
        assert_eq!(to_256(255, 0, 0), 196);
        assert_eq!(to_256(0, 0, 0), 16);
        assert_eq!(to_256(128, 128, 128), 244);
        assert_eq!(ramp_index(0.0, 16), 0);
        assert_eq!(ramp_index(1.0, 16), 15);
        assert_eq!(ramp_index(0.5, 16), 8);
    }
}
