//! Output: aligned plain-text tables in psql's style, the one `Report` trait every command's
//! result implements, and the one place that prints either the text or the `--json` document.
//! The same renderer feeds the snapshots, which ask it to redact durations.

use std::time::Duration;

use anyhow::Result;

use crate::error::Outcome;

pub(crate) use datahub_core::format::thousands;

/// How a report is rendered: for a person, or for a snapshot that must not change from run to
/// run (durations redacted; everything else is printed as it is).
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub redact_durations: bool,
}

impl Style {
    pub const SNAPSHOT: Style = Style {
        redact_durations: true,
    };

    /// `1.23 s`, or `[duration]` in a snapshot.
    pub(crate) fn seconds(&self, duration: Duration) -> String {
        if self.redact_durations {
            "[duration]".into()
        } else {
            format!("{:.2} s", duration.as_secs_f64())
        }
    }

    /// `12 ms`, or `[duration]` in a snapshot.
    pub(crate) fn millis(&self, duration: Duration) -> String {
        if self.redact_durations {
            "[duration]".into()
        } else {
            format!("{} ms", duration.as_millis())
        }
    }
}

/// What every command returns: rendered for people, as JSON for machines, and whether the
/// database (or app) is in the state the command requires (exit 0) or not (exit 1).
pub trait Report {
    fn render_with(&self, style: Style) -> String;

    fn render(&self) -> String {
        self.render_with(Style::default())
    }

    fn to_json(&self) -> serde_json::Value;

    fn ok(&self) -> bool;
}

/// Prints the report (text, or one JSON document with `--json`) and turns it into the outcome.
pub(crate) fn emit(report: &dyn Report, json: bool) -> Result<Outcome> {
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render());
    }
    Ok(Outcome::from_ready(report.ok()))
}

/// A table with a header row, rendered like psql's aligned format.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.headers.len());
        self.rows.push(row);
    }

    /// psql's aligned format: ` a | b ` lines, a `---+---` rule, and a row count. A table wider
    /// than [`MAX_WIDTH`] wraps its widest columns' cells onto more lines (psql's `wrapped`
    /// format), or, when the columns cannot all get a readable width, prints one record per
    /// block (psql's expanded `\x` format).
    pub(crate) fn render(&self) -> String {
        let natural: Vec<usize> = (0..self.headers.len())
            .map(|column| {
                self.rows
                    .iter()
                    .map(|row| width(&row[column]))
                    .chain(std::iter::once(width(&self.headers[column])))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let out = match fit(&natural) {
            Some(widths) => self.render_aligned(&widths),
            None => self.render_expanded(),
        };
        let n = self.rows.len();
        format!("{out}({n} {})\n", if n == 1 { "row" } else { "rows" })
    }

    fn render_aligned(&self, widths: &[usize]) -> String {
        let lines = |cells: &[String]| -> String {
            let wrapped: Vec<Vec<String>> = cells
                .iter()
                .zip(widths)
                .map(|(cell, width)| wrap(cell, *width))
                .collect();
            let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
            let mut out = String::new();
            for index in 0..height {
                let padded: Vec<String> = wrapped
                    .iter()
                    .zip(widths)
                    .map(|(parts, width)| {
                        let part = parts.get(index).map(String::as_str).unwrap_or("");
                        format!(" {part}{} ", " ".repeat(width - self::width(part)))
                    })
                    .collect();
                out.push_str(padded.join("|").trim_end());
                out.push('\n');
            }
            out
        };
        let mut out = lines(&self.headers);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        out.push_str(&rule.join("+"));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&lines(row));
        }
        out
    }

    /// One block per row: `-[ RECORD 1 ]`, then ` header | value` lines, values wrapped.
    fn render_expanded(&self) -> String {
        let key_width = self.headers.iter().map(|h| width(h)).max().unwrap_or(0);
        let value_width = MAX_WIDTH.saturating_sub(key_width + 3).max(MIN_COLUMN);
        let mut out = String::new();
        for (index, row) in self.rows.iter().enumerate() {
            out.push_str(&format!("-[ RECORD {} ]\n", index + 1));
            for (header, cell) in self.headers.iter().zip(row) {
                for (line, part) in wrap(cell, value_width).iter().enumerate() {
                    let key = if line == 0 { header.as_str() } else { "" };
                    let padding = " ".repeat(key_width - width(key));
                    out.push_str(format!("{key}{padding} | {part}").trim_end());
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The widest a table line may be: it reads in a 100-column terminal without wrapping.
pub const MAX_WIDTH: usize = 100;
/// The narrowest a wrapped column gets; below it, the table is printed one record per block.
const MIN_COLUMN: usize = 12;

/// Columns as they are when they fit in [`MAX_WIDTH`]; else the widest ones narrowed until they
/// do (none below [`MIN_COLUMN`] or its natural width); `None` when even that is too wide.
fn fit(natural: &[usize]) -> Option<Vec<usize>> {
    // ` cell ` per column and a `|` between two.
    let overhead = 3 * natural.len() - 1;
    let budget = MAX_WIDTH.checked_sub(overhead)?;
    let mut widths = natural.to_vec();
    while widths.iter().sum::<usize>() > budget {
        let (widest, &width) = widths
            .iter()
            .enumerate()
            .max_by_key(|(index, width)| (**width, usize::MAX - index))?;
        if width <= MIN_COLUMN {
            return None;
        }
        widths[widest] -= 1;
    }
    Some(widths)
}

/// The characters a cell takes on a terminal line (each char one column, as psql counts).
fn width(text: &str) -> usize {
    text.chars().count()
}

/// `text` in lines of at most `width` characters, broken at spaces where it can be.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        // A word longer than a line is cut.
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..width).collect());
        }
        let word: String = word.into_iter().collect();
        let needed = if line.is_empty() { 0 } else { 1 } + self::width(&word);
        if !line.is_empty() && self::width(&line) + needed > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// `a`, `b` → "`a`, `b`": names as messages show them.
pub(crate) fn backticked<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|name| format!("`{}`", name.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_psql() {
        let mut table = Table::new(&["table_name", "n"]);
        table.push(vec!["Connection".into(), "1".into()]);
        table.push(vec!["MetricDaily".into(), "20".into()]);
        assert_eq!(
            table.render(),
            " table_name  | n\n-------------+----\n Connection  | 1\n MetricDaily | 20\n(2 rows)\n"
        );
    }

    #[test]
    fn a_wide_table_wraps_its_widest_column_within_100_columns() {
        let mut table = Table::new(&["step", "detail"]);
        let detail = "word ".repeat(40);
        table.push(vec!["check".into(), detail.trim().into()]);
        table.push(vec!["deploy".into(), "short".into()]);
        let rendered = table.render();
        for line in rendered.lines() {
            assert!(line.chars().count() <= MAX_WIDTH, "{line}");
        }
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[0], " step   | detail");
        assert!(lines[2].starts_with(" check  | word word"), "{rendered}");
        assert!(lines[3].starts_with("        | word word"), "{rendered}");
        assert_eq!(rendered.matches("word").count(), 40, "nothing lost");
        assert!(
            rendered.contains("\n deploy | short\n(2 rows)\n"),
            "{rendered}"
        );
    }

    #[test]
    fn too_many_wide_columns_print_one_record_per_block() {
        let headers: Vec<String> = (0..9).map(|i| format!("column {i}")).collect();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut table = Table::new(&headers);
        table.push(
            (0..9)
                .map(|i| format!("value-{i}-{}", "x".repeat(20)))
                .collect(),
        );
        let rendered = table.render();
        assert!(
            rendered.starts_with("-[ RECORD 1 ]\ncolumn 0 | value-0-xxxx"),
            "{rendered}"
        );
        assert!(rendered.ends_with("column 8 | value-8-xxxxxxxxxxxxxxxxxxxx\n(1 row)\n"));
        for line in rendered.lines() {
            assert!(line.chars().count() <= MAX_WIDTH, "{line}");
        }
    }

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_only_longer_words() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
        assert_eq!(fit(&[10, 20]), Some(vec![10, 20]));
        assert_eq!(
            fit(&[10, 200]).map(|w| w.iter().sum::<usize>() + 5),
            Some(MAX_WIDTH)
        );
    }

    #[test]
    fn durations_are_redacted_only_in_snapshots() {
        let d = Duration::from_millis(1234);
        assert_eq!(Style::default().seconds(d), "1.23 s");
        assert_eq!(Style::default().millis(d), "1234 ms");
        assert_eq!(Style::SNAPSHOT.seconds(d), "[duration]");
    }
}
