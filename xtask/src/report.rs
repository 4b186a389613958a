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

/// The `--json` document of a report: `schema` names its shape and version
/// (`datahub.<report>.v1`; its JSON Schema is `tests/xtask/schemas/<report>.schema.json`), then
/// the report's fields. Keys are snake_case, timestamps RFC 3339 with their zone, and a value
/// that is not there is `null`.
pub(crate) fn document(report: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut document = serde_json::Map::new();
    document.insert(
        "schema".into(),
        serde_json::Value::String(format!("datahub.{report}.v1")),
    );
    if let serde_json::Value::Object(fields) = fields {
        document.extend(fields);
    }
    serde_json::Value::Object(document)
}

/// `2026-01-12 09:00:00`, a UTC time as the bookkeeping queries give it, in RFC 3339:
/// `2026-01-12T09:00:00Z`.
pub(crate) fn utc_rfc3339(utc: &str) -> String {
    format!("{}Z", utc.trim().replacen(' ', "T", 1))
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
    /// than [`MAX_WIDTH`] whose widest column is the last (a detail, a definition: prose) prints
    /// it beneath each row, whole, when the other columns fit; any other table prints one record
    /// per block (psql's expanded `\x auto`), so identifiers and timestamps are never cut.
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
        let fits = |widths: &[usize]| line_width(widths) <= MAX_WIDTH;
        let n_columns = natural.len();
        let out = if fits(&natural) {
            self.render_aligned(&natural, None)
        } else if n_columns > 1
            && natural[n_columns - 1] == natural.iter().copied().max().unwrap_or(0)
            && fits(&natural[..n_columns - 1])
        {
            self.render_aligned(&natural[..n_columns - 1], Some(n_columns - 1))
        } else {
            self.render_expanded()
        };
        let n = self.rows.len();
        format!("{out}({n} {})\n", if n == 1 { "row" } else { "rows" })
    }

    /// The columns `widths` names, aligned; the column `beneath`, when given, under each row,
    /// indented, one line per line of its text.
    fn render_aligned(&self, widths: &[usize], beneath: Option<usize>) -> String {
        let line = |cells: &[String]| -> String {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!(" {cell}{} ", " ".repeat(width - self::width(cell))))
                .collect();
            format!("{}\n", padded.join("|").trim_end())
        };
        let mut out = line(&self.headers[..widths.len()]);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        out.push_str(&rule.join("+"));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(&row[..widths.len()]));
            if let Some(column) = beneath {
                for text in row[column].lines().filter(|text| !text.trim().is_empty()) {
                    out.push_str(&format!("    {text}\n"));
                }
            }
        }
        out
    }

    /// One block per row: `-[ RECORD 1 ]`, then `header | value` lines, values wrapped; an
    /// empty value's line is left out (a plan's statement has few of its eight columns).
    fn render_expanded(&self) -> String {
        let key_width = self.headers.iter().map(|h| width(h)).max().unwrap_or(0);
        // Values wrap to the line, though never narrower than 20 characters.
        let value_width = MAX_WIDTH.saturating_sub(key_width + 3).max(20);
        let mut out = String::new();
        for (index, row) in self.rows.iter().enumerate() {
            out.push_str(&format!("-[ RECORD {} ]\n", index + 1));
            for (header, cell) in self.headers.iter().zip(row) {
                if cell.trim().is_empty() {
                    continue;
                }
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
/// A table line's width with these column widths: ` cell ` per column and a `|` between two.
fn line_width(widths: &[usize]) -> usize {
    widths
        .iter()
        .map(|w| w + 3)
        .sum::<usize>()
        .saturating_sub(1)
}

/// The characters a cell takes on a terminal line (each char one column, as psql counts).
fn width(text: &str) -> usize {
    text.chars().count()
}

/// `text` in lines of at most `width` characters, broken at spaces and after `_` where it can
/// be (identifiers like `Connection_workspaceId_fkey` break between their words).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        for (index, part) in word.split_inclusive('_').enumerate() {
            let space = usize::from(index == 0 && !line.is_empty());
            if !line.is_empty() && self::width(&line) + space + self::width(part) > width {
                lines.push(std::mem::take(&mut line));
            } else if space == 1 {
                line.push(' ');
            }
            // A part longer than a line is cut.
            let mut rest: Vec<char> = part.chars().collect();
            while self::width(&line) + rest.len() > width {
                let room = width - self::width(&line);
                line.extend(rest.drain(..room));
                lines.push(std::mem::take(&mut line));
            }
            line.extend(rest);
        }
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
    fn a_wide_last_column_goes_beneath_its_row() {
        let mut table = Table::new(&["step", "result", "detail"]);
        let detail = "word ".repeat(40);
        table.push(vec!["check".into(), "done".into(), detail.trim().into()]);
        table.push(vec![
            "smoke".into(),
            "failed".into(),
            "1 of 2\n❌ chat".into(),
        ]);
        assert_eq!(
            table.render(),
            format!(
                " step  | result\n-------+--------\n check | done\n    {}\n smoke | failed\n    1 of 2\n    ❌ chat\n(2 rows)\n",
                detail.trim()
            )
        );
    }

    #[test]
    fn a_wide_first_column_drops_to_one_record_per_block() {
        let mut table = Table::new(&["migration", "state", "at (UTC)"]);
        let name = format!("20251219170600_{}", "x_".repeat(35));
        table.push(vec![
            name.clone(),
            "applied".into(),
            "2026-01-12 09:00:00".into(),
        ]);
        assert_eq!(
            table.render(),
            format!("-[ RECORD 1 ]\nmigration | {name}\nstate     | applied\nat (UTC)  | 2026-01-12 09:00:00\n(1 row)\n")
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
        let mut sparse: Vec<String> = vec![String::new(); 9];
        sparse[3] = "only this".into();
        table.push(sparse);
        let rendered = table.render();
        assert!(
            rendered.contains("\n-[ RECORD 2 ]\ncolumn 3 | only this\n(2 rows)\n"),
            "{rendered}"
        );
        assert!(
            rendered.starts_with("-[ RECORD 1 ]\ncolumn 0 | value-0-xxxx"),
            "{rendered}"
        );
        assert!(rendered.contains("column 8 | value-8-xxxxxxxxxxxxxxxxxxxx\n-[ RECORD 2 ]"));
        for line in rendered.lines() {
            assert!(line.chars().count() <= MAX_WIDTH, "{line}");
        }
    }

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_only_longer_words() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
        assert_eq!(
            wrap("Connection_workspaceId_fkey", 17),
            ["Connection_", "workspaceId_fkey"]
        );
        assert_eq!(wrap("a_b c", 3), ["a_b", "c"]);
    }

    #[test]
    fn json_documents_name_their_schema_and_times_their_zone() {
        let doc = document("check", serde_json::json!({"backfilled": true}));
        assert_eq!(doc["schema"], "datahub.check.v1");
        assert_eq!(doc["backfilled"], true);
        assert_eq!(utc_rfc3339("2026-01-12 09:00:00"), "2026-01-12T09:00:00Z");
    }

    #[test]
    fn durations_are_redacted_only_in_snapshots() {
        let d = Duration::from_millis(1234);
        assert_eq!(Style::default().seconds(d), "1.23 s");
        assert_eq!(Style::default().millis(d), "1234 ms");
        assert_eq!(Style::SNAPSHOT.seconds(d), "[duration]");
    }
}
