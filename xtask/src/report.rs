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

    /// psql's aligned format: ` a | b ` lines, a `---+---` rule, and a row count.
    pub(crate) fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|column| {
                self.rows
                    .iter()
                    .map(|row| row[column].chars().count())
                    .chain(std::iter::once(self.headers[column].chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| -> String {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| {
                    let padding = width - cell.chars().count();
                    format!(" {cell}{} ", " ".repeat(padding))
                })
                .collect();
            padded.join("|").trim_end().to_string()
        };
        let mut out = line(&self.headers);
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        out.push_str(&rule.join("+"));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        let n = self.rows.len();
        out.push_str(&format!("({n} {})\n", if n == 1 { "row" } else { "rows" }));
        out
    }
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
    fn durations_are_redacted_only_in_snapshots() {
        let d = Duration::from_millis(1234);
        assert_eq!(Style::default().seconds(d), "1.23 s");
        assert_eq!(Style::default().millis(d), "1234 ms");
        assert_eq!(Style::SNAPSHOT.seconds(d), "[duration]");
    }
}
