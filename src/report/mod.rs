//! Output: one result model ([`model::Results`], and [`model::Report`] for layer reports) and
//! the writers that format it — scan's table and CSV, JSON (docs/scan.schema.json), Markdown,
//! per-vector CSV and HTML. Writers compute nothing.

pub mod html;
pub mod json;
pub mod model;
pub mod table;
pub mod text;

pub use model::{build, now_rfc3339, Report, Results};

/// "1 intruder", "2 intruders": a count with its noun (plural by a trailing s, or as given).
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A name from a checkpoint as text output shows it: control characters escaped (`\u{1b}`), so
/// a crafted tensor name cannot drive the terminal; and, given a width, at most that many
/// characters, the middle elided (a name's ends tell most).
pub fn shown_name(name: &str, width: Option<usize>) -> String {
    let s = crate::error::escape_controls(name).into_owned();
    let n = s.chars().count();
    match width {
        Some(w) if n > w && w >= 3 => {
            let head = (w - 1) / 2;
            let tail = w - 1 - head;
            let mut out: String = s.chars().take(head).collect();
            out.push('…');
            out.extend(s.chars().skip(n - tail));
            out
        }
        _ => s,
    }
}

/// One CSV field as RFC 4180 writes it: quoted (quotes doubled) when it holds a comma, a quote
/// or a line break, as is otherwise. Every CSV lorascope writes goes through here.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A number as a plain decimal with 7 significant digits (`6.977734`, `0.0001234`), never in
/// exponent form: spreadsheets read it as written, and f32 data carries no more digits.
pub fn plain(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    let decimals = (6 - mag).clamp(0, 45) as usize;
    let s = format!("{x:.decimals$}");
    // Trailing zeros say nothing; `1.500000` → `1.5`.
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Md,
    Html,
    Json,
    Csv,
}

impl ReportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::Md => "md",
            ReportFormat::Html => "html",
            ReportFormat::Json => "json",
            ReportFormat::Csv => "csv",
        }
    }
    pub fn render(self, r: &Report) -> String {
        match self {
            ReportFormat::Md => text::markdown(r),
            ReportFormat::Html => html::html(r),
            ReportFormat::Json => serde_json::to_string_pretty(&json::report(r)).unwrap() + "\n",
            ReportFormat::Csv => text::csv(r),
        }
    }
}

pub use crate::fsio::{write_atomic, write_new, write_output};

#[cfg(test)]
mod number_tests {
    use super::{count, csv_field, plain, shown_name};

    #[test]
    fn plain_decimals_keep_seven_significant_digits_without_exponents() {
        assert_eq!(plain(6.977734), "6.977734");
        assert_eq!(plain(0.9998834133), "0.9998834");
        assert_eq!(plain(1.0), "1");
        assert_eq!(plain(1234567.89), "1234568");
        assert_eq!(plain(-0.000012345678), "-0.00001234568");
        assert_eq!(plain(0.0), "0");
        assert_eq!(plain(1e-30).parse::<f64>().unwrap(), 1e-30);
        for x in [6.977734e0, 3.2e-9, 812.25, 0.5] {
            let p = plain(x);
            assert!(!p.contains('e'), "{p}");
            assert!(
                (p.parse::<f64>().unwrap() - x).abs() <= x.abs() * 1e-6,
                "{p}"
            );
        }
        assert_eq!(count(1, "intruder", "intruders"), "1 intruder");
        assert_eq!(count(0, "intruder", "intruders"), "0 intruders");
        assert_eq!(count(2, "matrix", "matrices"), "2 matrices");
    }

    #[test]
    fn names_are_shown_without_control_characters_and_within_a_width() {
        assert_eq!(
            shown_name("a\x1b]0;pwned\x07b", None),
            "a\\u{1b}]0;pwned\\u{7}b"
        );
        assert_eq!(
            shown_name("model.layers.0.q_proj.weight", Some(80)),
            "model.layers.0.q_proj.weight"
        );
        let long = "x".repeat(70_000) + ".weight";
        let s = shown_name(&long, Some(40));
        assert_eq!(s.chars().count(), 40);
        assert!(s.ends_with("x.weight") && s.contains('…'), "{s}");
    }

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_says() {
        assert_eq!(csv_field("plain.name"), "plain.name");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("cr\r"), "\"cr\r\"");
    }
}
