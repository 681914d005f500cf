//! The similarity heatmap (paper Fig. 1/3): x = tuned vector j, y = base vector i, colour =
//! |cos|. Two matrix rows per terminal row with `▀` (fg = upper, bg = lower); without colour,
//! one row per line in density glyphs.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::widgets::Widget;

use super::*;
use crate::tui::app::Heat;
use crate::tui::theme::{ramp_index, Theme, MONO_RAMP};

pub struct HeatmapView<'a> {
    pub heat: &'a Heat,
    /// First tuned vector (column) and base vector (row) shown.
    pub col0: usize,
    pub row0: usize,
    /// Columns available (the heatmap's K).
    pub cols: usize,
    pub cursor: (usize, usize),
    /// Per tuned vector: is it an intruder (rule or flag)?
    pub intruder: &'a [bool],
    pub theme: Theme,
}

impl HeatmapView<'_> {
    /// Matrix rows one terminal row shows.
    pub fn rows_per_line(theme: &Theme) -> usize {
        if theme.colored() {
            2
        } else {
            1
        }
    }
}

impl Widget for HeatmapView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.height < 2 || area.width == 0 {
            return;
        }
        let h = self.heat;
        // First line: markers over intruder columns and the cursor column.
        let width = (area.width as usize).min(self.cols.min(h.cols).saturating_sub(self.col0));
        for x in 0..width {
            let j = self.col0 + x;
            // Both marks at once: an intruder under the cursor keeps its ▲, in reverse video.
            let intruder = self.intruder.get(j).copied().unwrap_or(false);
            let (sym, style) = match (intruder, j == self.cursor.1) {
                (true, true) => ("▲", self.theme.intruder().add_modifier(Modifier::REVERSED)),
                (true, false) => ("▲", self.theme.intruder()),
                (false, true) => ("▼", Style::new().add_modifier(Modifier::BOLD)),
                (false, false) => (" ", Style::new()),
            };
            buf[(area.x + x as u16, area.y)]
                .set_symbol(sym)
                .set_style(style);
        }
        let per = HeatmapView::rows_per_line(&self.theme);
        for line in 0..(area.height - 1) as usize {
            let y = area.y + 1 + line as u16;
            let i_top = self.row0 + line * per;
            if i_top >= h.rows {
                break;
            }
            for x in 0..width {
                let j = self.col0 + x;
                let cell = &mut buf[(area.x + x as u16, y)];
                if self.theme.colored() {
                    let top = self.theme.heat(h.at(i_top, j));
                    let bottom = if i_top + 1 < h.rows {
                        self.theme.heat(h.at(i_top + 1, j))
                    } else {
                        ratatui::style::Color::Reset
                    };
                    cell.set_symbol("▀").set_fg(top).set_bg(bottom);
                } else {
                    let g = MONO_RAMP[ramp_index(h.at(i_top, j), MONO_RAMP.len())];
                    cell.set_char(g);
                }
                let (ci, cj) = self.cursor;
                if j == cj && (ci == i_top || (per == 2 && ci == i_top + 1)) {
                    cell.set_symbol(if per == 1 || ci == i_top {
                        "▀"
                    } else {
                        "▄"
                    });
                    cell.set_fg(self.theme.cursor());
                    cell.modifier.insert(Modifier::BOLD);
                    if !self.theme.colored() {
                        cell.set_char('X');
                    }
                }
            }
        }
    }
}

pub(super) fn render_heatmap(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let focused = app.focus == Pane::Heatmap;
    let heat = app.heatmap.of(app.selected_row());
    let (Some(h), Some(r)) = (heat, app.selected_report()) else {
        let b = block(" |cos| base (y) × tuned (x) ", focused, theme);
        let inner = b.inner(area);
        f.render_widget(b, area);
        let failed = app.heatmap.error_of(app.selected_row());
        let (t, style) = match (failed, app.selected_report()) {
            (Some(e), Some(_)) => (format!("heatmap failed: {e}"), theme.intruder()),
            (None, Some(_)) => ("loading…".to_string(), theme.dim()),
            _ => (status_text(app), theme.dim()),
        };
        f.render_widget(
            Paragraph::new(t).style(style).wrap(Wrap { trim: true }),
            inner,
        );
        return;
    };
    let (i, j) = (
        app.heatmap.cursor_i.min(h.rows - 1),
        app.cursor_j.min(h.cols - 1),
    );
    let title = if area.width >= 36 {
        format!(" |cos| base {i} × tuned {j} = {:.3} ", h.at(i, j))
    } else {
        format!(" |cos| {i}×{j} = {:.3} ", h.at(i, j))
    };
    let b = block(title, focused, theme);
    let inner = b.inner(area);
    f.render_widget(b, area);
    if inner.height < 3 {
        return;
    }
    let v = layout::heat_view(app, h, inner, HeatmapView::rows_per_line(theme));
    let name = &app.rows[h.row].name;
    let intruder: Vec<bool> = (0..h.cols)
        .map(|c| c < r.vectors.len() && app.is_intruder(name, r, c))
        .collect();
    f.render_widget(
        HeatmapView {
            heat: h,
            col0: v.col0,
            row0: v.row0,
            cols: v.cols,
            cursor: (i, j),
            intruder: &intruder,
            theme: *theme,
        },
        v.map,
    );
    let mut spans = vec![Span::raw("0 ")];
    // Every distinct colour once, or 8 of 16 where the pane is narrow.
    let n = if v.legend.width >= 40 {
        theme.heat_steps()
    } else {
        theme.heat_steps().min(8)
    };
    for s in 0..n {
        let x = (s as f32 + 0.5) / n as f32;
        if theme.colored() {
            spans.push(Span::styled("█", Style::new().fg(theme.heat(x))));
        } else {
            let g = crate::tui::theme::MONO_RAMP[crate::tui::theme::ramp_index(x, 8)];
            spans.push(Span::raw(g.to_string()));
        }
    }
    let shown = v.cols.min(v.map.width as usize);
    let mut tail = if v.legend.width >= 30 {
        format!(
            " 1  j {}–{}/{}",
            v.col0,
            v.col0 + shown.saturating_sub(1),
            v.cols
        )
    } else {
        format!(" 1 {shown}/{}", v.cols)
    };
    // Zoomed and wider than what was computed: say where more come from.
    if app.zoom && v.map.width as usize > v.cols && v.cols == h.cols {
        tail += &format!(" (all computed; K > {} computes more)", h.cols);
    }
    spans.push(Span::raw(tail));
    f.render_widget(Paragraph::new(Line::from(spans)), v.legend);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::theme::Depth;
    use ratatui::style::Color;

    /// The test heatmap drawn on a w×h buffer, column 1 an intruder.
    fn draw(h: &Heat, theme: Theme, (w, ht): (u16, u16), cursor: (usize, usize)) -> Buffer {
        let mut buf = Buffer::empty(Rect::new(0, 0, w, ht));
        HeatmapView {
            heat: h,
            col0: 0,
            row0: 0,
            cols: 3,
            cursor,
            intruder: &[false, true, false],
            theme,
        }
        .render(buf.area, &mut buf);
        buf
    }

    fn heat() -> Heat {
        // 4 base × 3 tuned: column 1 is an intruder (all low).
        Heat {
            row: 0,
            rows: 4,
            cols: 3,
            data: vec![1.0, 0.0, 0.0, 0.0, 0.05, 1.0, 0.0, 0.1, 0.0, 0.5, 0.0, 0.0],
        }
    }

    #[test]
    fn half_blocks_carry_two_rows_in_fg_and_bg() {
        let h = heat();
        let theme = Theme::new(Depth::True);
        let buf = draw(&h, theme, (3, 3), (3, 2));
        // Marker line: intruder ▲ over column 1, cursor ▼ over column 2.
        assert_eq!(buf[(1, 0)].symbol(), "▲");
        assert_eq!(buf[(2, 0)].symbol(), "▼");
        assert!(!buf[(1, 0)].modifier.contains(Modifier::REVERSED));
        // Cell (x=0, line 1) shows base rows 0 and 1 of tuned vector 0: |cos| 1.0 over 0.0.
        let c = &buf[(0, 1)];
        assert_eq!(c.symbol(), "▀");
        assert_eq!(c.fg, Color::Rgb(253, 231, 37));
        assert_eq!(c.bg, Color::Rgb(68, 1, 84));
        // Column 2, line 2 holds base rows 2 and 3, with the cursor on row 3: ▄.
        let c = &buf[(2, 2)];
        assert_eq!(c.symbol(), "▄");
        assert_eq!(c.fg, Color::White);
        // Column 1, line 2: rows 2 and 3 of the intruder, 0.1 and 0.0.
        assert_eq!(buf[(1, 2)].fg, Color::Rgb(72, 26, 108));
        assert_eq!(buf[(1, 2)].bg, Color::Rgb(68, 1, 84));
    }

    #[test]
    fn an_intruder_under_the_cursor_keeps_its_mark() {
        let h = heat();
        for depth in [Depth::True, Depth::C256, Depth::C16, Depth::Mono] {
            let theme = Theme::new(depth);
            let buf = draw(&h, theme, (3, 3), (0, 1));
            let c = &buf[(1, 0)];
            assert_eq!(c.symbol(), "▲", "{depth:?}");
            assert!(
                c.modifier.contains(Modifier::REVERSED),
                "{depth:?}: cursor not shown"
            );
            assert_eq!(buf[(0, 0)].symbol(), " ");
        }
    }

    #[test]
    fn without_colour_one_row_per_line_in_glyphs() {
        let h = heat();
        let theme = Theme::new(Depth::Mono);
        let buf = draw(&h, theme, (3, 5), (9, 9));
        let line = |y: u16| {
            (0..3)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        };
        assert_eq!(line(1), "@  ");
        assert_eq!(line(2), "  @");
        assert_eq!(line(3), "   ");
        assert_eq!(line(4), "=  ");
        assert!(buf
            .content
            .iter()
            .all(|c| c.fg == Color::Reset && c.bg == Color::Reset));
    }
}
