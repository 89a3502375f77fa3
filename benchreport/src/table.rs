//! Markdown tables: a header, an alignment per column, rows of already formatted cells.

use std::fmt::Write as _;

/// A column's alignment marker in the separator row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// `---` (the renderer's default, left).
    Default,
    /// `---:`
    Right,
    /// `:---:`
    Center,
}

/// A markdown table under construction.
#[derive(Clone, Debug)]
pub struct Table {
    head: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings, every column [`Align::Default`].
    pub fn new<S: Into<String>>(head: impl IntoIterator<Item = S>) -> Self {
        let head: Vec<String> = head.into_iter().map(Into::into).collect();
        let align = vec![Align::Default; head.len()];
        Self {
            head,
            align,
            rows: Vec::new(),
        }
    }

    /// Sets the columns' alignments (missing ones stay [`Align::Default`]).
    pub fn align(mut self, align: &[Align]) -> Self {
        for (a, b) in self.align.iter_mut().zip(align) {
            *a = *b;
        }
        self
    }

    /// Appends a row (cells beyond the header are kept: the caller decides the shape).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table's lines, each ending in `\n`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        };
        // An empty heading is a single space (`| a | |`), as the tables have always had it.
        out.push('|');
        for h in &self.head {
            if h.is_empty() {
                out.push_str(" |");
            } else {
                let _ = write!(out, " {h} |");
            }
        }
        out.push('\n');
        out.push('|');
        for a in &self.align {
            out.push_str(match a {
                Align::Default => "---|",
                Align::Right => "---:|",
                Align::Center => ":---:|",
            });
        }
        out.push('\n');
        for r in &self.rows {
            line(&mut out, r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_head_separator_rows() {
        let mut t = Table::new(["a", "b", ""]).align(&[Align::Right, Align::Center]);
        t.row(["1", "2", "3"]);
        assert_eq!(t.render(), "| a | b | |\n|---:|:---:|---|\n| 1 | 2 | 3 |\n");
    }
}
