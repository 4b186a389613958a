//! A migration script split into its statements, each with the line it starts on and the
//! `-- lint: allow <rule> because …` comments written just above it. A lexer, not a parser: it
//! knows where PostgreSQL's tokens cannot end a statement (quoted strings, `E'…'` escapes,
//! quoted identifiers, `$tag$ … $tag$` bodies, `--` and nested `/* */` comments), which is all
//! it takes to find the semicolons that do. A `DO` block or a function body is one statement.

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement's text, without the terminating semicolon or the comments above it.
    pub sql: String,
    /// 1-based line of the statement's first token.
    pub line: usize,
    /// The reviewed exceptions written in the comments just above the statement.
    pub allows: Vec<Allow>,
}

/// `-- lint: allow <rule> because <reason>`: a reviewed exception for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub rule: String,
    /// Empty when the comment gives none; lint does not accept an exception without a reason.
    pub reason: String,
    pub line: usize,
}

impl Statement {
    /// The first line of the statement, shortened to `width` characters, for tables.
    pub fn summary(&self, width: usize) -> String {
        let flat = self.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        if flat.chars().count() <= width {
            flat
        } else {
            let mut short: String = flat.chars().take(width.saturating_sub(1)).collect();
            short.push('…');
            short
        }
    }

    /// The statement's first keyword, upper-cased (`ALTER`, `CREATE`, `DO`, `BEGIN`, …).
    pub fn keyword(&self) -> String {
        self.sql
            .split(|c: char| !c.is_ascii_alphabetic())
            .find(|w| !w.is_empty())
            .unwrap_or("")
            .to_ascii_uppercase()
    }
}

/// Splits `script` into statements, in order. Comments after the last statement are dropped.
pub fn split(script: &str) -> Vec<Statement> {
    let chars: Vec<char> = script.chars().collect();
    let mut statements = Vec::new();
    let mut line = 1usize;
    let mut start: Option<(usize, usize)> = None;
    let mut allows: Vec<Allow> = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        match c {
            '-' if at(i + 1) == '-' => {
                let end = (i..chars.len())
                    .find(|&j| chars[j] == '\n')
                    .unwrap_or(chars.len());
                let comment: String = chars[i + 2..end].iter().collect();
                if let Some(allow) = parse_allow(&comment, line) {
                    allows.push(allow);
                }
                i = end;
                continue;
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
                continue;
            }
            ';' => {
                if let Some((from, first_line)) = start.take() {
                    statements.push(Statement {
                        sql: chars[from..i].iter().collect::<String>().trim().to_string(),
                        line: first_line,
                        allows: std::mem::take(&mut allows),
                    });
                }
                i += 1;
                continue;
            }
            '\n' => {
                line += 1;
                i += 1;
                continue;
            }
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            _ => {}
        }
        if start.is_none() {
            start = Some((i, line));
        }
        match c {
            '\'' => {
                let escapes = i > 0
                    && matches!(chars[i - 1], 'E' | 'e')
                    && (i < 2 || !is_ident_char(chars[i - 2]));
                i = skip_quoted(&chars, i, '\'', escapes, &mut line);
            }
            '"' => i = skip_quoted(&chars, i, '"', false, &mut line),
            '$' if i == 0 || !is_ident_char(chars[i - 1]) => match dollar_tag(&chars, i) {
                Some(tag) => {
                    let body_start = i + tag.len();
                    let close = find_sequence(&chars, body_start, &tag);
                    let end = close.map(|c| c + tag.len()).unwrap_or(chars.len());
                    line += chars[i..end].iter().filter(|&&c| c == '\n').count();
                    i = end;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    if let Some((from, first_line)) = start {
        let sql = chars[from..].iter().collect::<String>().trim().to_string();
        if !sql.is_empty() {
            statements.push(Statement {
                sql,
                line: first_line,
                allows,
            });
        }
    }
    statements
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// The index just past a quoted token that starts at `from` (a doubled quote stays inside).
fn skip_quoted(chars: &[char], from: usize, quote: char, escapes: bool, line: &mut usize) -> usize {
    let mut i = from + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if escapes => i += 2,
            c if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            '\n' => {
                *line += 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    chars.len()
}

/// `$tag$` (or `$$`) starting at `from`, as characters.
fn dollar_tag(chars: &[char], from: usize) -> Option<Vec<char>> {
    let mut j = from + 1;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        if j == from + 1 && chars[j].is_ascii_digit() {
            return None; // `$1`: a parameter, not a tag
        }
        j += 1;
    }
    (chars.get(j) == Some(&'$')).then(|| chars[from..=j].to_vec())
}

fn find_sequence(chars: &[char], from: usize, needle: &[char]) -> Option<usize> {
    (from..chars.len().saturating_sub(needle.len() - 1)).find(|&i| chars[i..].starts_with(needle))
}

/// `lint: allow <rule> because <reason>` in a comment's text.
fn parse_allow(comment: &str, line: usize) -> Option<Allow> {
    let rest = comment.trim().strip_prefix("lint:")?.trim_start();
    let rest = rest.strip_prefix("allow")?.trim_start();
    let (rule, reason) = match rest.split_once(char::is_whitespace) {
        Some((rule, reason)) => (rule, reason.trim()),
        None => (rest, ""),
    };
    let reason = reason
        .strip_prefix("because")
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    Some(Allow {
        rule: rule.to_string(),
        reason,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_strings_comments_and_bodies() {
        let script = "-- a comment; not a statement\nSET lock_timeout = '500ms';\n\n/* block; /* nested; */ still */\nALTER TABLE \"A;B\" ADD COLUMN \"x\" TEXT DEFAULT 'it''s; fine';\nDO $$\nBEGIN\n  PERFORM 1; -- inside\nEND $$;\nCREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$ SELECT 'a;b' $body$;\nSELECT E'\\';', $1::int\n";
        let statements = split(script);
        let lines: Vec<(usize, String)> =
            statements.iter().map(|s| (s.line, s.keyword())).collect();
        assert_eq!(
            lines,
            vec![
                (2, "SET".to_string()),
                (5, "ALTER".to_string()),
                (6, "DO".to_string()),
                (10, "CREATE".to_string()),
                (11, "SELECT".to_string()),
            ]
        );
        assert_eq!(
            statements[1].sql,
            "ALTER TABLE \"A;B\" ADD COLUMN \"x\" TEXT DEFAULT 'it''s; fine'"
        );
        assert!(statements[2].sql.ends_with("END $$"));
        assert_eq!(statements[4].sql, "SELECT E'\\';', $1::int");
    }

    #[test]
    fn allow_comments_belong_to_the_next_statement() {
        let script = "SELECT 1;\n-- lint: allow table-rewrite because the table is empty in production\n-- other words\nALTER TABLE t ALTER COLUMN c TYPE bigint;\n-- lint: allow index-build\nCREATE INDEX i ON t(c);\n";
        let statements = split(script);
        assert!(statements[0].allows.is_empty());
        assert_eq!(
            statements[1].allows,
            vec![Allow {
                rule: "table-rewrite".into(),
                reason: "the table is empty in production".into(),
                line: 2
            }]
        );
        assert_eq!(statements[1].line, 4);
        assert_eq!(statements[2].allows[0].rule, "index-build");
        assert_eq!(statements[2].allows[0].reason, "");
    }

    #[test]
    fn every_shipped_migration_splits_into_whole_statements() {
        for migration in crate::migrations::read_dir(&crate::migrations::default_dir()).unwrap() {
            for statement in split(&migration.script) {
                let first = statement.keyword();
                assert!(
                    ["ALTER", "CREATE", "DO", "SET", "DROP"].contains(&first.as_str()),
                    "{}:{}: {first}",
                    migration.name,
                    statement.line
                );
            }
        }
    }
}
