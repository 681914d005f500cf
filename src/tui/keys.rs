//! The key table: the only place that maps keys to actions. The help popup and the status-bar
//! hints are generated from it, so they cannot drift from what the keys do.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Back,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Top,
    Bottom,
    NextPane,
    PrevPane,
    Zoom,
    Help,
    Filter,
    NextIntruder,
    PrevIntruder,
    Sort,
    EpsDown,
    EpsUp,
    EpsInput,
    KInput,
    HeatSmaller,
    HeatLarger,
    Flag,
    Mark,
    Pause,
    Overview,
    FullSpectrum,
    Export,
    Suspend,
    Mouse,
}

const NONE: KeyModifiers = KeyModifiers::NONE;
const CTRL: KeyModifiers = KeyModifiers::CONTROL;
const SHIFT: KeyModifiers = KeyModifiers::SHIFT;

pub struct Binding {
    pub keys: &'static [(KeyCode, KeyModifiers)],
    /// How the keys are written in help.
    pub label: &'static str,
    pub action: Action,
    pub help: &'static str,
    /// Shown in the status bar when set.
    pub hint: Option<&'static str>,
}

use KeyCode::*;

pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[(Up, NONE), (Char('k'), NONE)],
        label: "↑ k",
        action: Action::Up,
        help: "previous matrix / row",
        hint: None,
    },
    Binding {
        keys: &[(Down, NONE), (Char('j'), NONE)],
        label: "↓ j",
        action: Action::Down,
        help: "next matrix / row",
        hint: Some("↑↓ move"),
    },
    Binding {
        keys: &[(Left, NONE), (Char('h'), NONE)],
        label: "← h",
        action: Action::Left,
        help: "previous singular vector",
        hint: None,
    },
    Binding {
        keys: &[(Right, NONE), (Char('l'), NONE)],
        label: "→ l",
        action: Action::Right,
        help: "next singular vector",
        hint: Some("←→ vector"),
    },
    Binding {
        keys: &[(PageUp, NONE)],
        label: "PgUp",
        action: Action::PageUp,
        help: "up by the rows shown",
        hint: None,
    },
    Binding {
        keys: &[(PageDown, NONE)],
        label: "PgDn",
        action: Action::PageDown,
        help: "down by the rows shown",
        hint: None,
    },
    Binding {
        keys: &[(Char('g'), NONE), (Home, NONE)],
        label: "g Home",
        action: Action::Top,
        help: "first",
        hint: None,
    },
    Binding {
        keys: &[(Char('G'), SHIFT), (Char('G'), NONE), (End, NONE)],
        label: "G End",
        action: Action::Bottom,
        help: "last",
        hint: None,
    },
    Binding {
        keys: &[(Tab, NONE)],
        label: "Tab",
        action: Action::NextPane,
        help: "next pane",
        hint: Some("Tab pane"),
    },
    Binding {
        keys: &[(BackTab, SHIFT), (BackTab, NONE)],
        label: "S-Tab",
        action: Action::PrevPane,
        help: "previous pane",
        hint: None,
    },
    Binding {
        keys: &[(Char('z'), NONE), (Enter, NONE)],
        label: "z ⏎",
        action: Action::Zoom,
        help: "zoom the pane / back",
        hint: None,
    },
    Binding {
        keys: &[(Char('o'), NONE)],
        label: "o",
        action: Action::Overview,
        help: "overview: layers, count vs ε",
        hint: Some("o overview"),
    },
    Binding {
        keys: &[(Char('/'), NONE)],
        label: "/",
        action: Action::Filter,
        help: "filter matrices by regex",
        hint: Some("/ filter"),
    },
    Binding {
        keys: &[(Char('n'), NONE)],
        label: "n",
        action: Action::NextIntruder,
        help: "next matrix with intruders",
        hint: None,
    },
    Binding {
        keys: &[(Char('N'), SHIFT), (Char('N'), NONE)],
        label: "N",
        action: Action::PrevIntruder,
        help: "previous matrix w/ intruders",
        hint: None,
    },
    Binding {
        keys: &[(Char('s'), NONE)],
        label: "s",
        action: Action::Sort,
        help: "sort by name / intruder count",
        hint: None,
    },
    Binding {
        keys: &[(Char('['), NONE), (Char('-'), NONE)],
        label: "[ -",
        action: Action::EpsDown,
        help: "ε − 0.05",
        hint: None,
    },
    Binding {
        keys: &[
            (Char(']'), NONE),
            (Char('+'), NONE),
            (Char('+'), SHIFT),
            (Char('='), NONE),
        ],
        label: "] +",
        action: Action::EpsUp,
        help: "ε + 0.05",
        hint: Some("[] ε"),
    },
    Binding {
        keys: &[(Char('e'), NONE)],
        label: "e",
        action: Action::EpsInput,
        help: "type ε",
        hint: None,
    },
    Binding {
        keys: &[(Char('K'), SHIFT), (Char('K'), NONE)],
        label: "K",
        action: Action::KInput,
        help: "type k (vectors tested)",
        hint: None,
    },
    Binding {
        keys: &[(Char('<'), NONE), (Char('<'), SHIFT), (Char(','), NONE)],
        label: "< ,",
        action: Action::HeatSmaller,
        help: "heatmap: fewer vectors",
        hint: None,
    },
    Binding {
        keys: &[(Char('>'), NONE), (Char('>'), SHIFT), (Char('.'), NONE)],
        label: "> .",
        action: Action::HeatLarger,
        help: "heatmap: more vectors",
        hint: None,
    },
    Binding {
        keys: &[(Char('f'), NONE)],
        label: "f",
        action: Action::Flag,
        help: "flag vector: intruder or not",
        hint: Some("f flag"),
    },
    Binding {
        keys: &[(Char(' '), NONE)],
        label: "Space",
        action: Action::Mark,
        help: "mark the matrix for export",
        hint: None,
    },
    Binding {
        keys: &[(Char('F'), SHIFT), (Char('F'), NONE)],
        label: "F",
        action: Action::FullSpectrum,
        help: "all singular values / top part",
        hint: None,
    },
    Binding {
        keys: &[(Char('x'), NONE)],
        label: "x",
        action: Action::Export,
        help: "export marked (or this) matrix",
        hint: Some("x export"),
    },
    Binding {
        keys: &[(Char('m'), NONE)],
        label: "m",
        action: Action::Mouse,
        help: "mouse on/off (off: select)",
        hint: None,
    },
    Binding {
        keys: &[(Char('p'), NONE)],
        label: "p",
        action: Action::Pause,
        help: "pause/resume background work",
        hint: None,
    },
    Binding {
        keys: &[(Char('?'), NONE), (Char('?'), SHIFT)],
        label: "?",
        action: Action::Help,
        help: "this help",
        hint: Some("? help"),
    },
    Binding {
        keys: &[(Esc, NONE)],
        label: "Esc",
        action: Action::Back,
        help: "back: popup, zoom, filter",
        hint: None,
    },
    Binding {
        keys: &[(Char('q'), NONE)],
        label: "q",
        action: Action::Quit,
        help: "quit",
        hint: Some("q quit"),
    },
    Binding {
        keys: &[(Char('c'), CTRL)],
        label: "C-c",
        action: Action::Quit,
        help: "quit",
        hint: None,
    },
    Binding {
        keys: &[(Char('z'), CTRL)],
        label: "C-z",
        action: Action::Suspend,
        help: "suspend (resume: fg)",
        hint: None,
    },
];

pub fn action_for(key: &KeyEvent) -> Option<Action> {
    BINDINGS
        .iter()
        .find(|b| {
            b.keys
                .iter()
                .any(|(c, m)| *c == key.code && *m == key.modifiers)
        })
        .map(|b| b.action)
}

/// Status-bar hints, in table order.
pub fn hints() -> Vec<&'static str> {
    BINDINGS.iter().filter_map(|b| b.hint).collect()
}

/// The hints the status bar never drops: how to get help and how to leave.
pub fn pinned_hints() -> Vec<&'static str> {
    BINDINGS
        .iter()
        .filter(|b| matches!(b.action, Action::Help | Action::Quit))
        .filter_map(|b| b.hint)
        .collect()
}

/// As many whole hints as fit in `width` columns, in table order, leaving out the pinned ones
/// (the status bar puts those at its right end).
pub fn hints_line(width: usize) -> String {
    let pinned = pinned_hints();
    let mut line = String::new();
    for h in hints().into_iter().filter(|h| !pinned.contains(h)) {
        let extra = if line.is_empty() { 0 } else { 2 } + h.chars().count();
        if line.chars().count() + extra > width {
            break;
        }
        if !line.is_empty() {
            line.push_str("  ");
        }
        line.push_str(h);
    }
    line
}

/// The key table as Markdown, for the README (a test keeps the two the same).
pub fn markdown_table() -> String {
    let mut s = String::from("| key | does |\n|---|---|\n");
    for b in BINDINGS {
        let keys = b.label.replace('|', "\\|");
        s.push_str(&format!("| `{keys}` | {} |\n", b.help.replace('|', "\\|")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_texts_fit_the_two_column_help_at_80_columns() {
        for b in BINDINGS {
            assert!(b.help.chars().count() <= 30, "{}", b.help);
            assert!(b.label.chars().count() <= 6, "{}", b.label);
        }
    }

    #[test]
    fn no_key_is_bound_twice() {
        let mut seen = std::collections::HashSet::new();
        for b in BINDINGS {
            for k in b.keys {
                assert!(seen.insert(*k), "{k:?} bound twice");
            }
        }
    }
}
