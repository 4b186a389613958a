//! Output: aligned plain-text tables in psql's style (the same renderer feeds the snapshots),
//! and JSON documents for `--json`.

/// A table with a header row, rendered like psql's aligned format.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.headers.len());
        self.rows.push(row);
    }

    /// psql's aligned format: ` a | b ` lines, a `---+---` rule, and a row count.
    pub fn render(&self) -> String {
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
        let mut out = String::new();
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
        out.push_str(&line(&self.headers));
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

/// Formats a count with thousands separators: 5000000 → `5,000,000`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (index, ch) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
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
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(5_000_000), "5,000,000");
        assert_eq!(thousands(-1234), "-1,234");
    }
}
