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
    /// Switch between the paper's rule and the degenerate-aware one.
    RuleKind,
    HeatSmaller,
    HeatLarger,
    Flag,
    Mark,
    Pause,
    Overview,
    FullSpectrum,
    Export,
    Repair,
    Suspend,
    Mouse,
    /// Show run 1–9 (the digit pressed).
    SwitchRun,
    NextRun,
    Compare,
}

const NONE: KeyModifiers = KeyModifiers::NONE;
const CTRL: KeyModifiers = KeyModifiers::CONTROL;
const SHIFT: KeyModifiers = KeyModifiers::SHIFT;

pub struct Binding {
    /// The first is the one shown; the others are alternatives (vim keys, shifted forms).
    pub keys: &'static [(KeyCode, KeyModifiers)],
    pub action: Action,
    pub help: &'static str,
}

impl Binding {
    /// How help writes the keys: the first two distinct names ("↑ k", "G End").
    pub fn label(&self) -> String {
        // A run of digits reads as a range: "1–9".
        let digits: Vec<char> = self
            .keys
            .iter()
            .filter_map(|(c, _)| match c {
                Char(d) if d.is_ascii_digit() => Some(*d),
                _ => None,
            })
            .collect();
        if digits.len() > 2 && digits.len() == self.keys.len() {
            return format!("{}–{}", digits[0], digits[digits.len() - 1]);
        }
        let mut names: Vec<String> = Vec::new();
        for (c, m) in self.keys {
            let n = key_name(*c, *m);
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names.truncate(2);
        names.join(" ")
    }
}

/// A key as help and the status bar write it.
pub fn key_name(code: KeyCode, mods: KeyModifiers) -> String {
    let base = match code {
        Up => "↑".to_string(),
        Down => "↓".to_string(),
        Left => "←".to_string(),
        Right => "→".to_string(),
        PageUp => "PgUp".to_string(),
        PageDown => "PgDn".to_string(),
        Home => "Home".to_string(),
        End => "End".to_string(),
        Tab => "Tab".to_string(),
        BackTab => return "S-Tab".to_string(),
        Enter => "⏎".to_string(),
        Esc => "Esc".to_string(),
        Char(' ') => "Space".to_string(),
        Char(c) => c.to_string(),
        other => format!("{other:?}"),
    };
    if mods.contains(CTRL) {
        format!("C-{base}")
    } else {
        base
    }
}

/// The status bar's hints: the actions' first keys and a word ("↑↓ move"), in this order.
/// `? help` and `q quit` are pinned at its right end ([`pinned_hints`]).
pub const HINTS: &[(&[Action], &str)] = &[
    (&[Action::Up, Action::Down], "move"),
    (&[Action::Left, Action::Right], "vector"),
    (&[Action::NextPane], "pane"),
    (&[Action::Overview], "overview"),
    (&[Action::Filter], "filter"),
    (&[Action::EpsDown, Action::EpsUp], "ε"),
    (&[Action::Flag], "flag"),
    (&[Action::Export], "export"),
    (&[Action::Help], "help"),
    (&[Action::Quit], "quit"),
];

/// The export popup's keys: one table for what they do and what the popup says.
pub const EXPORT_KEYS: &[(char, crate::report::ReportFormat, &str)] = &[
    ('m', crate::report::ReportFormat::Md, "Markdown"),
    ('h', crate::report::ReportFormat::Html, "HTML"),
    ('j', crate::report::ReportFormat::Json, "JSON"),
    ('c', crate::report::ReportFormat::Csv, "CSV"),
];

/// What a key does while a prompt (filter, ε, k) is open; other characters are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptAction {
    Submit,
    Cancel,
    Delete,
}

/// The prompt's keys: one table for what they do and what the prompt's title says.
pub const PROMPT_KEYS: &[(KeyCode, PromptAction, &str)] = &[
    (Enter, PromptAction::Submit, "apply"),
    (Esc, PromptAction::Cancel, "cancel"),
    (Backspace, PromptAction::Delete, "delete"),
];

pub fn prompt_action(code: KeyCode) -> Option<PromptAction> {
    PROMPT_KEYS
        .iter()
        .find(|(c, ..)| *c == code)
        .map(|(_, a, _)| *a)
}

/// The prompt title's hint: "⏎ apply  Esc cancel".
pub fn prompt_hint() -> String {
    PROMPT_KEYS
        .iter()
        .filter(|(_, a, _)| *a != PromptAction::Delete)
        .map(|(c, _, word)| format!("{} {word}", key_name(*c, NONE)))
        .collect::<Vec<_>>()
        .join("  ")
}

/// What a key does in the repair dialog; other characters are typed into its text fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormAction {
    Run,
    Cancel,
    Next,
    Prev,
    /// Change a choice (scope, format).
    Choose,
    Delete,
}

/// The repair dialog's keys: one table for what they do and what its title says.
pub const FORM_KEYS: &[(KeyCode, FormAction, &str)] = &[
    (Tab, FormAction::Next, "field"),
    (Down, FormAction::Next, ""),
    (BackTab, FormAction::Prev, ""),
    (Up, FormAction::Prev, ""),
    (Left, FormAction::Choose, "choose"),
    (Right, FormAction::Choose, ""),
    (Enter, FormAction::Run, "run"),
    (Esc, FormAction::Cancel, "cancel"),
    (Backspace, FormAction::Delete, ""),
];

pub fn form_action(code: KeyCode) -> Option<FormAction> {
    FORM_KEYS
        .iter()
        .find(|(c, ..)| *c == code)
        .map(|(_, a, _)| *a)
}

/// The repair dialog title's hint: "Tab↓ field  ←→ choose  ⏎ run  Esc cancel" (a key without a
/// word joins the one before it when they do the same).
pub fn form_hint() -> String {
    let mut parts: Vec<(FormAction, String, &str)> = Vec::new();
    for (c, a, word) in FORM_KEYS {
        match parts.last_mut() {
            Some((last, keys, _)) if word.is_empty() && last == a => {
                keys.push_str(&key_name(*c, NONE))
            }
            _ if word.is_empty() => {}
            _ => parts.push((*a, key_name(*c, NONE), word)),
        }
    }
    parts
        .iter()
        .map(|(_, keys, word)| format!("{keys} {word}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// While the help is open these actions scroll it by so many lines; any other key closes it.
pub const HELP_SCROLL: &[(Action, isize)] = &[
    (Action::Down, 1),
    (Action::Up, -1),
    (Action::PageDown, 10),
    (Action::PageUp, -10),
];

/// The first key bound to an action, as written.
fn first_key(action: Action) -> String {
    BINDINGS
        .iter()
        .find(|b| b.action == action)
        .and_then(|b| b.keys.first())
        .map(|(c, m)| key_name(*c, *m))
        .unwrap_or_default()
}

fn hint_text((actions, word): &(&[Action], &str)) -> String {
    let keys: String = actions.iter().map(|a| first_key(*a)).collect();
    format!("{keys} {word}")
}

use KeyCode::*;

pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[(Up, NONE), (Char('k'), NONE)],
        action: Action::Up,
        help: "previous matrix / row",
    },
    Binding {
        keys: &[(Down, NONE), (Char('j'), NONE)],
        action: Action::Down,
        help: "next matrix / row",
    },
    Binding {
        keys: &[(Left, NONE), (Char('h'), NONE)],
        action: Action::Left,
        help: "previous singular vector",
    },
    Binding {
        keys: &[(Right, NONE), (Char('l'), NONE)],
        action: Action::Right,
        help: "next singular vector",
    },
    Binding {
        keys: &[(PageUp, NONE)],
        action: Action::PageUp,
        help: "up by the rows shown",
    },
    Binding {
        keys: &[(PageDown, NONE)],
        action: Action::PageDown,
        help: "down by the rows shown",
    },
    Binding {
        keys: &[(Char('g'), NONE), (Home, NONE)],
        action: Action::Top,
        help: "first",
    },
    Binding {
        keys: &[(Char('G'), SHIFT), (Char('G'), NONE), (End, NONE)],
        action: Action::Bottom,
        help: "last",
    },
    Binding {
        keys: &[(Tab, NONE)],
        action: Action::NextPane,
        help: "next pane",
    },
    Binding {
        keys: &[(BackTab, SHIFT), (BackTab, NONE)],
        action: Action::PrevPane,
        help: "previous pane",
    },
    Binding {
        keys: &[(Char('z'), NONE), (Enter, NONE)],
        action: Action::Zoom,
        help: "zoom the pane / back",
    },
    Binding {
        keys: &[(Char('o'), NONE)],
        action: Action::Overview,
        help: "overview: layers, count vs ε",
    },
    Binding {
        keys: &[(Char('/'), NONE)],
        action: Action::Filter,
        help: "filter matrices by regex",
    },
    Binding {
        keys: &[(Char('n'), NONE)],
        action: Action::NextIntruder,
        help: "next matrix with intruders",
    },
    Binding {
        keys: &[(Char('N'), SHIFT), (Char('N'), NONE)],
        action: Action::PrevIntruder,
        help: "previous matrix w/ intruders",
    },
    Binding {
        keys: &[(Char('s'), NONE)],
        action: Action::Sort,
        help: "sort by name / intruder count",
    },
    Binding {
        keys: &[(Char('['), NONE), (Char('-'), NONE)],
        action: Action::EpsDown,
        help: "ε − 0.05",
    },
    Binding {
        keys: &[
            (Char(']'), NONE),
            (Char('+'), NONE),
            (Char('+'), SHIFT),
            (Char('='), NONE),
        ],
        action: Action::EpsUp,
        help: "ε + 0.05",
    },
    Binding {
        keys: &[(Char('e'), NONE)],
        action: Action::EpsInput,
        help: "type ε",
    },
    Binding {
        keys: &[(Char('K'), SHIFT), (Char('K'), NONE)],
        action: Action::KInput,
        help: "type k (vectors tested)",
    },
    Binding {
        keys: &[(Char('d'), NONE)],
        action: Action::RuleKind,
        help: "paper / degenerate-aware rule",
    },
    Binding {
        keys: &[(Char('<'), NONE), (Char('<'), SHIFT), (Char(','), NONE)],
        action: Action::HeatSmaller,
        help: "heatmap: fewer vectors",
    },
    Binding {
        keys: &[(Char('>'), NONE), (Char('>'), SHIFT), (Char('.'), NONE)],
        action: Action::HeatLarger,
        help: "heatmap: more vectors",
    },
    Binding {
        keys: &[(Char('f'), NONE)],
        action: Action::Flag,
        help: "flag vector: intruder or not",
    },
    Binding {
        keys: &[(Char(' '), NONE)],
        action: Action::Mark,
        help: "mark the matrix for export",
    },
    Binding {
        keys: &[(Char('F'), SHIFT), (Char('F'), NONE)],
        action: Action::FullSpectrum,
        help: "all singular values / top part",
    },
    Binding {
        keys: &[(Char('x'), NONE)],
        action: Action::Export,
        help: "export marked (or this) matrix",
    },
    Binding {
        keys: &[(Char('R'), SHIFT), (Char('R'), NONE)],
        action: Action::Repair,
        help: "repair intruders, then verify",
    },
    Binding {
        keys: &[
            (Char('1'), NONE),
            (Char('2'), NONE),
            (Char('3'), NONE),
            (Char('4'), NONE),
            (Char('5'), NONE),
            (Char('6'), NONE),
            (Char('7'), NONE),
            (Char('8'), NONE),
            (Char('9'), NONE),
        ],
        action: Action::SwitchRun,
        help: "show run 1–9 (several runs)",
    },
    Binding {
        keys: &[(Char('r'), NONE)],
        action: Action::NextRun,
        help: "next run",
    },
    Binding {
        keys: &[(Char('c'), NONE)],
        action: Action::Compare,
        help: "this matrix in every run",
    },
    Binding {
        keys: &[(Char('m'), NONE)],
        action: Action::Mouse,
        help: "mouse on/off (off: select)",
    },
    Binding {
        keys: &[(Char('p'), NONE)],
        action: Action::Pause,
        help: "pause/resume background work",
    },
    Binding {
        keys: &[(Char('?'), NONE), (Char('?'), SHIFT)],
        action: Action::Help,
        help: "this help",
    },
    Binding {
        keys: &[(Esc, NONE)],
        action: Action::Back,
        help: "back: popup, zoom, filter",
    },
    Binding {
        keys: &[(Char('q'), NONE)],
        action: Action::Quit,
        help: "quit",
    },
    Binding {
        keys: &[(Char('c'), CTRL)],
        action: Action::Quit,
        help: "quit",
    },
    Binding {
        keys: &[(Char('z'), CTRL)],
        action: Action::Suspend,
        help: "suspend (resume: fg)",
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
pub fn hints() -> Vec<String> {
    HINTS.iter().map(hint_text).collect()
}

/// The hints the status bar never drops: how to get help and how to leave.
pub fn pinned_hints() -> Vec<String> {
    HINTS
        .iter()
        .filter(|(a, _)| matches!(a, [Action::Help] | [Action::Quit]))
        .map(hint_text)
        .collect()
}

/// As many whole hints as fit in `width` columns, in table order, leaving out the pinned ones
/// (the status bar puts those at its right end).
pub fn hints_line(width: usize) -> String {
    let pinned = pinned_hints();
    let mut line = String::new();
    for h in hints().into_iter().filter(|h| !pinned.contains(h)) {
        let h = h.as_str();
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
        let keys = b.label().replace('|', "\\|");
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
            assert!(b.label().chars().count() <= 6, "{}", b.label());
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
