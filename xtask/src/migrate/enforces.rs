//! What a migration enforces on rows that already exist, read from the migration itself, and
//! whether the database's rows would pass it. A migration that sets a column NOT NULL, validates
//! a constraint or adds one validated fails on the first row that breaks it, and the tool that
//! ran it records a failed migration: the incident this project exists to prevent. Counting the
//! rows that would break it before the script runs turns that failure into a refusal that
//! records nothing.
//!
//! Counted: `SET NOT NULL`; `VALIDATE CONSTRAINT` of a CHECK (from the catalog, or added earlier
//! in the same script) or of a foreign key already in the catalog; a CHECK added validated; a
//! NOT NULL column added without a default (or a serial type) on a table with rows. Not counted
//! (the migration decides, as it would have): a foreign key added validated or added and
//! validated in the same script, a primary key over NULLs, a table renamed first, anything in a
//! `DO` block, a function or dynamic SQL, and a NOT NULL in a script that changes rows itself
//! first (an UPDATE, or a column rewritten `USING`), which may fill the NULLs. Names are read
//! without their schema and found through the search path. A lexer's reading of `ALTER TABLE`
//! statements, not a parser: what it cannot read it does not claim. Counts are read-only (ACCESS SHARE); each is an index scan where an index
//! covers the column and fresh statistics say so, a table scan otherwise, which is the scan the
//! migration itself was about to make under a stronger lock.

use crate::db::Client;
use anyhow::{Context, Result};

use super::statements;
use crate::db::quote_ident;

/// One rule a statement makes the existing rows obey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    /// `ALTER TABLE t ALTER COLUMN c SET NOT NULL`, or `ADD COLUMN c … NOT NULL` without a
    /// default (which fails on any existing row).
    NotNull { table: String, column: String },
    /// `ALTER TABLE t ADD COLUMN c … NOT NULL` without a default: every existing row breaks it.
    NewNotNullColumn { table: String, column: String },
    /// `VALIDATE CONSTRAINT k`, or a constraint added without `NOT VALID`.
    Constraint {
        table: String,
        name: Option<String>,
        /// The CHECK expression when the migration itself gives it.
        check: Option<String>,
        foreign_key: bool,
    },
}

impl Enforcement {
    pub fn table(&self) -> &str {
        match self {
            Enforcement::NotNull { table, .. }
            | Enforcement::NewNotNullColumn { table, .. }
            | Enforcement::Constraint { table, .. } => table,
        }
    }

    /// `"MetricDaily"."connectionId" NOT NULL`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Enforcement::NotNull { table, column } => format!("`{table}`.`{column}` NOT NULL"),
            Enforcement::NewNotNullColumn { table, column } => {
                format!("a new NOT NULL column `{table}`.`{column}` without a default")
            }
            Enforcement::Constraint {
                table,
                name: Some(name),
                ..
            } => format!("the constraint `{name}` on `{table}`"),
            Enforcement::Constraint { table, .. } => format!("a new constraint on `{table}`"),
        }
    }
}

/// Every enforcement the statements of `script` make, in order.
pub fn enforcements(script: &str) -> Vec<Enforcement> {
    let mut found = Vec::new();
    for statement in statements::split(script) {
        found.extend(of_statement(&statement.sql));
    }
    found
}

/// The CHECK expressions `script` adds by constraint name, validated or not, so that a later
/// `VALIDATE CONSTRAINT` of the same script can be counted before the constraint exists.
fn checks_added(script: &str) -> Vec<(String, String)> {
    enforcements_with_not_valid(script)
        .into_iter()
        .filter_map(|e| match e {
            Enforcement::Constraint {
                name: Some(name),
                check: Some(check),
                ..
            } => Some((name, check)),
            _ => None,
        })
        .collect()
}

/// The `CHECK (column IS NOT NULL)` constraints `script` adds, validated or not, as (table,
/// column, constraint name): the NOT NULL a release's expand announces.
pub fn not_null_checks_added(script: &str) -> Vec<(String, String, String)> {
    enforcements_with_not_valid(script)
        .into_iter()
        .filter_map(|e| match e {
            Enforcement::Constraint {
                table,
                name: Some(name),
                check: Some(check),
                ..
            } => not_null_of(&check).map(|column| (table, column, name)),
            _ => None,
        })
        .collect()
}

/// Like [`enforcements`], but also the constraints added `NOT VALID` (for their expressions).
fn enforcements_with_not_valid(script: &str) -> Vec<Enforcement> {
    let mut found = Vec::new();
    for statement in statements::split(script) {
        let tokens = tokenize(&statement.sql);
        let Some((table, actions)) = alter_table(&tokens) else {
            continue;
        };
        for action in actions {
            if let Some(e) = read_action(&table, action, &statement.sql, true) {
                found.push(e);
            }
        }
    }
    found
}

fn of_statement(sql: &str) -> Vec<Enforcement> {
    let tokens = tokenize(sql);
    let Some((table, actions)) = alter_table(&tokens) else {
        return Vec::new();
    };
    actions
        .into_iter()
        .filter_map(|action| read_action(&table, action, sql, false))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word, upper-cased for keywords; `ident` keeps PostgreSQL's folding (lower case).
    Word(String),
    /// A quoted identifier's value.
    Quoted(String),
    Open,
    Close,
    Comma,
    Dot,
    /// Anything else (an operator, a string, a number), with its text.
    Other(String),
}

/// Tokens with the byte range each came from, so parenthesised text can be cut out whole.
fn tokenize(sql: &str) -> Vec<(Token, usize, usize)> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let token = match c {
            '(' => {
                i += 1;
                Token::Open
            }
            ')' => {
                i += 1;
                Token::Close
            }
            ',' => {
                i += 1;
                Token::Comma
            }
            '.' => {
                i += 1;
                Token::Dot
            }
            '"' => {
                let mut value = String::new();
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'"' {
                        if bytes.get(i + 1) == Some(&b'"') {
                            value.push('"');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    let ch = sql[i..].chars().next().unwrap_or('\0');
                    value.push(ch);
                    i += ch.len_utf8().max(1);
                }
                Token::Quoted(value)
            }
            '\'' => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                Token::Other(sql[start..i].to_string())
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while i < bytes.len()
                    && ((bytes[i] as char).is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || bytes[i] == b'$')
                {
                    i += 1;
                }
                Token::Word(sql[start..i].to_string())
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or('\0');
                i += ch.len_utf8().max(1);
                Token::Other(ch.to_string())
            }
        };
        tokens.push((token, start, i));
    }
    tokens
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.eq_ignore_ascii_case(word))
}

/// An identifier's value as PostgreSQL folds it.
fn ident(token: &Token) -> Option<String> {
    match token {
        Token::Quoted(value) => Some(value.clone()),
        Token::Word(word) => Some(word.to_ascii_lowercase()),
        _ => None,
    }
}

type Spanned = (Token, usize, usize);

/// `ALTER TABLE [IF EXISTS] [ONLY] name [*] action, action …`: the table and the actions'
/// token slices (split at top-level commas).
fn alter_table(tokens: &[Spanned]) -> Option<(String, Vec<&[Spanned]>)> {
    let mut i = 0;
    let next = |i: usize| tokens.get(i).map(|t| &t.0);
    if !(next(0).is_some_and(|t| is_word(t, "ALTER"))
        && next(1).is_some_and(|t| is_word(t, "TABLE")))
    {
        return None;
    }
    i += 2;
    if next(i).is_some_and(|t| is_word(t, "IF"))
        && next(i + 1).is_some_and(|t| is_word(t, "EXISTS"))
    {
        i += 2;
    }
    if next(i).is_some_and(|t| is_word(t, "ONLY")) {
        i += 1;
    }
    let mut table = ident(next(i)?)?;
    i += 1;
    // schema-qualified: the table is the last part
    while next(i) == Some(&Token::Dot) {
        table = ident(next(i + 1)?)?;
        i += 2;
    }
    if matches!(next(i), Some(Token::Other(s)) if s == "*") {
        i += 1;
    }
    let rest = &tokens[i..];
    let mut actions = Vec::new();
    let mut depth = 0i32;
    let mut from = 0;
    for (j, (token, _, _)) in rest.iter().enumerate() {
        match token {
            Token::Open => depth += 1,
            Token::Close => depth -= 1,
            Token::Comma if depth == 0 => {
                actions.push(&rest[from..j]);
                from = j + 1;
            }
            _ => {}
        }
    }
    actions.push(&rest[from..]);
    Some((table, actions))
}

/// One `ALTER TABLE` action, as an enforcement on existing rows (or, with `keep_not_valid`,
/// also a constraint added `NOT VALID`, for its expression).
fn read_action(
    table: &str,
    action: &[Spanned],
    sql: &str,
    keep_not_valid: bool,
) -> Option<Enforcement> {
    let words: Vec<&Token> = action.iter().map(|t| &t.0).collect();
    let has = |word: &str| words.iter().any(|t| is_word(t, word));
    let not_valid = words
        .windows(2)
        .any(|w| is_word(w[0], "NOT") && is_word(w[1], "VALID"));
    let table = table.to_string();
    match words.first() {
        // ALTER [COLUMN] c SET NOT NULL
        Some(t) if is_word(t, "ALTER") => {
            let mut i = 1;
            if words.get(i).is_some_and(|t| is_word(t, "COLUMN")) {
                i += 1;
            }
            let column = ident(words.get(i)?)?;
            let set_not_null = words.len() == i + 4
                && is_word(words[i + 1], "SET")
                && is_word(words[i + 2], "NOT")
                && is_word(words[i + 3], "NULL");
            set_not_null.then_some(Enforcement::NotNull { table, column })
        }
        // VALIDATE CONSTRAINT k
        Some(t) if is_word(t, "VALIDATE") => {
            let name = ident(words.get(2)?)?;
            Some(Enforcement::Constraint {
                table,
                name: Some(name),
                check: None,
                foreign_key: false,
            })
        }
        Some(t) if is_word(t, "ADD") => {
            let mut i = 1;
            let mut name = None;
            if words.get(i).is_some_and(|t| is_word(t, "CONSTRAINT")) {
                name = Some(ident(words.get(i + 1)?)?);
                i += 2;
            }
            let first = words.get(i)?;
            if is_word(first, "CHECK") {
                if not_valid && !keep_not_valid {
                    return None;
                }
                let check = parenthesised(action, sql, i + 1)?;
                return Some(Enforcement::Constraint {
                    table,
                    name,
                    check: Some(check),
                    foreign_key: false,
                });
            }
            if is_word(first, "FOREIGN") {
                if not_valid {
                    return None;
                }
                return Some(Enforcement::Constraint {
                    table,
                    name,
                    check: None,
                    foreign_key: true,
                });
            }
            if is_word(first, "UNIQUE") || is_word(first, "PRIMARY") || is_word(first, "EXCLUDE") {
                return None;
            }
            // ADD [COLUMN] [IF NOT EXISTS] c type … NOT NULL, without DEFAULT
            if name.is_some() {
                return None;
            }
            if is_word(first, "COLUMN") {
                i += 1;
            }
            if words.get(i).is_some_and(|t| is_word(t, "IF")) {
                i += 3;
            }
            let column = ident(words.get(i)?)?;
            let not_null = words
                .windows(2)
                .any(|w| is_word(w[0], "NOT") && is_word(w[1], "NULL"));
            // The serial types have a default of their own (a sequence).
            let serial = [
                "SERIAL",
                "BIGSERIAL",
                "SMALLSERIAL",
                "SERIAL2",
                "SERIAL4",
                "SERIAL8",
            ]
            .iter()
            .any(|t| has(t));
            (not_null && !has("DEFAULT") && !has("GENERATED") && !serial)
                .then_some(Enforcement::NewNotNullColumn { table, column })
        }
        _ => None,
    }
}

/// The text inside the parentheses that open at token `at` of `action`, cut from `sql`.
fn parenthesised(action: &[Spanned], sql: &str, at: usize) -> Option<String> {
    let (open, _, from) = action.get(at)?;
    if *open != Token::Open {
        return None;
    }
    let mut depth = 0;
    for (token, start, _) in &action[at..] {
        match token {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    return Some(sql[*from..*start].trim().to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// Rows of the database that would break one enforcement, counted.
#[derive(Debug, Clone)]
pub struct Violation {
    pub enforcement: Enforcement,
    /// The column the rows leave NULL, when the rule is NOT NULL (for the next step's advice).
    pub column: Option<String>,
    pub rows: i64,
}

impl Violation {
    /// `` `MetricDaily`.`connectionId` has 1,200 NULLs `` and the like.
    pub fn describe(&self) -> String {
        let rows = crate::report::thousands(self.rows);
        match &self.enforcement {
            Enforcement::NotNull { table, column } => {
                format!("`{table}`.`{column}` has {rows} NULL value(s) and the migration sets it NOT NULL")
            }
            Enforcement::NewNotNullColumn { table, column } => format!(
                "`{table}` has {rows} row(s) and the migration adds `{column}` NOT NULL without a default"
            ),
            other => format!("{rows} row(s) of `{}` break {}", other.table(), other.describe()),
        }
    }
}

/// Counts, on the database as it is now, the rows that would make `script` fail, for each
/// enforcement that has any. An enforcement on a table or column the database does not have
/// yet (the script creates it) is not counted: there are no rows to break it.
pub fn violations(
    client: &mut Client,
    script: &str,
    proven: &[(String, String)],
) -> Result<Vec<Violation>> {
    let added = checks_added(script);
    // A script that changes rows (or rewrites a column with USING) before its NOT NULL may fill
    // the NULLs itself: counted now, they would refuse a migration that passes.
    let fills_itself = changes_rows(script);
    // A column whose NULLs the script may fill, or a gate has proved absent: its NOT NULL is
    // not counted, however the script states it (SET NOT NULL or a CHECK it validates).
    let exempt = |table: &str, column: &str| {
        fills_itself || proven.iter().any(|(t, c)| t == table && c == column)
    };
    let mut found = Vec::new();
    for enforcement in enforcements(script) {
        let table = enforcement.table().to_string();
        let not_null_column = match &enforcement {
            Enforcement::NotNull { column, .. } => Some(column.clone()),
            Enforcement::Constraint {
                check: Some(check), ..
            } => not_null_of(check),
            _ => None,
        };
        if not_null_column.is_some_and(|column| exempt(&table, &column)) {
            continue;
        }
        let exists: bool = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&quote_ident(&table)],
            )
            .context("cannot look up a table the migration enforces a rule on")?
            .get(0);
        if !exists {
            continue;
        }
        let (count_sql, column) = match &enforcement {
            Enforcement::NotNull { column, .. } => {
                if !nullable_column(client, &table, column)? {
                    continue;
                }
                (null_count_sql(&table, column), Some(column.clone()))
            }
            Enforcement::NewNotNullColumn { .. } => (
                format!("SELECT count(*) FROM {}", quote_ident(&table)),
                None,
            ),
            Enforcement::Constraint {
                name,
                check,
                foreign_key,
                ..
            } => {
                let catalog = match name {
                    Some(name) => constraint(client, &table, name)?,
                    None => None,
                };
                let expression = check.clone().or_else(|| {
                    name.as_ref()
                        .and_then(|n| added.iter().find(|(k, _)| k == n).map(|(_, e)| e.clone()))
                });
                match (catalog, expression, foreign_key) {
                    (Some(Catalog::Validated), _, _) => continue,
                    (Some(Catalog::Check(expression)), _, _) | (None, Some(expression), false) => {
                        match not_null_of(&expression) {
                            Some(column) if exempt(&table, &column) => continue,
                            Some(column) => (null_count_sql(&table, &column), Some(column)),
                            None => (
                                format!(
                                    "SELECT count(*) FROM {} WHERE ({expression}) IS FALSE",
                                    quote_ident(&table)
                                ),
                                None,
                            ),
                        }
                    }
                    (Some(Catalog::ForeignKey(sql)), _, _) => (sql, None),
                    // A foreign key added validated in the same statement, or a constraint
                    // the script creates some other way: not read here.
                    _ => continue,
                }
            }
        };
        // A count that cannot run (an expression naming what the script creates first) is
        // no proof either way: the migration decides, as it would have. So is a count that
        // would queue behind a session holding the table: the migration's own bounded tries
        // wait for that lock, and say who holds it.
        let counted = crate::interrupt::cancellable(client, |client| {
            client.long("a count of the rows a migration would fail on", |client| {
                let mut tx = client.transaction()?;
                tx.execute(
                    "SELECT set_config('lock_timeout', $1, true)",
                    &[&format!("{}ms", crate::db::LOCK_TRY.as_millis())],
                )?;
                let row = tx.query_one(count_sql.as_str(), &[])?;
                tx.commit()?;
                Ok(row)
            })
        });
        let rows: i64 = match counted {
            Ok(row) => row.get(0),
            Err(error) if error.as_db_error().is_some() => {
                crate::interrupt::check()?;
                continue;
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "cannot count the rows that would break {}",
                        enforcement.describe()
                    )
                })
            }
        };
        if rows > 0 {
            found.push(Violation {
                enforcement,
                column,
                rows,
            });
        }
    }
    Ok(found)
}

/// Whether `script` changes rows itself: an UPDATE, INSERT, DELETE, MERGE or COPY, or a column
/// rewritten `USING` an expression.
fn changes_rows(script: &str) -> bool {
    statements::split(script).iter().any(|statement| {
        let keyword = statement.keyword();
        matches!(
            keyword.as_str(),
            "UPDATE" | "INSERT" | "DELETE" | "MERGE" | "COPY" | "WITH"
        ) || (keyword == "ALTER"
            && tokenize(&statement.sql)
                .iter()
                .any(|(t, _, _)| is_word(t, "USING")))
    })
}

fn null_count_sql(table: &str, column: &str) -> String {
    format!(
        "SELECT count(*) FROM {} WHERE {} IS NULL",
        quote_ident(table),
        quote_ident(column)
    )
}

/// `"workspaceId" IS NOT NULL` (as written or as `pg_get_expr` prints it) → `workspaceId`.
fn not_null_of(expression: &str) -> Option<String> {
    let tokens: Vec<Token> = tokenize(expression).into_iter().map(|t| t.0).collect();
    let inner: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Open | Token::Close))
        .collect();
    (inner.len() == 4
        && is_word(inner[1], "IS")
        && is_word(inner[2], "NOT")
        && is_word(inner[3], "NULL"))
    .then(|| ident(inner[0]))
    .flatten()
}

/// Whether `table`.`column` exists and is nullable (catalog read).
fn nullable_column(client: &mut Client, table: &str, column: &str) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT NOT a.attnotnull FROM pg_attribute a
             WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
            &[&quote_ident(table), &column],
        )
        .context("cannot look up a column the migration sets NOT NULL")?;
    Ok(row.is_some_and(|r| r.get(0)))
}

enum Catalog {
    Validated,
    Check(String),
    /// The count of rows whose key has no referenced row.
    ForeignKey(String),
}

/// What the catalog says of constraint `name` on `table`: validated already, or what to count.
fn constraint(client: &mut Client, table: &str, name: &str) -> Result<Option<Catalog>> {
    let row = client
        .query_opt(
            "SELECT k.convalidated, k.contype::text, pg_get_expr(k.conbin, k.conrelid),
                    k.confrelid::regclass::text,
                    ARRAY(SELECT quote_ident(a.attname) FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                          JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
                    ARRAY(SELECT quote_ident(a.attname) FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
                          JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
             FROM pg_constraint k WHERE k.conrelid = to_regclass($1) AND k.conname = $2",
            &[&quote_ident(table), &name],
        )
        .context("cannot look up a constraint the migration validates")?;
    let Some(row) = row else {
        return Ok(None);
    };
    if row.get::<_, bool>(0) {
        return Ok(Some(Catalog::Validated));
    }
    let kind: String = row.get(1);
    Ok(match kind.as_str() {
        "c" => row.get::<_, Option<String>>(2).map(Catalog::Check),
        "f" => {
            let referenced: String = row.get(3);
            let keys: Vec<String> = row.get(4);
            let referenced_keys: Vec<String> = row.get(5);
            let present = keys
                .iter()
                .map(|k| format!("t.{k} IS NOT NULL"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let matches = keys
                .iter()
                .zip(&referenced_keys)
                .map(|(k, r)| format!("r.{r} = t.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            Some(Catalog::ForeignKey(format!(
                "SELECT count(*) FROM {} t WHERE {present} AND NOT EXISTS (SELECT 1 FROM {referenced} r WHERE {matches})",
                quote_ident(table)
            )))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_not_null_and_validate_are_read() {
        let script = r#"
            SET LOCAL lock_timeout = '500ms';
            ALTER TABLE "MetricDaily" VALIDATE CONSTRAINT "MetricDaily_connectionId_not_null";
            ALTER TABLE ONLY public."MetricDaily" ALTER COLUMN "connectionId" SET NOT NULL, DROP CONSTRAINT x;
            ALTER TABLE "Insight" ADD CONSTRAINT "Insight_x_check" CHECK ("x" > 0) NOT VALID;
            ALTER TABLE "Insight" ADD CONSTRAINT "Insight_y_check" CHECK (("y" IS NOT NULL));
            ALTER TABLE "Insight" ADD COLUMN "z" TEXT NOT NULL;
            ALTER TABLE "Insight" ADD COLUMN "w" TEXT NOT NULL DEFAULT 'a';
            DO $$ BEGIN ALTER TABLE "Insight" ALTER COLUMN "q" SET NOT NULL; END $$;
        "#;
        let found = enforcements(script);
        assert_eq!(
            found,
            vec![
                Enforcement::Constraint {
                    table: "MetricDaily".into(),
                    name: Some("MetricDaily_connectionId_not_null".into()),
                    check: None,
                    foreign_key: false
                },
                Enforcement::NotNull {
                    table: "MetricDaily".into(),
                    column: "connectionId".into()
                },
                Enforcement::Constraint {
                    table: "Insight".into(),
                    name: Some("Insight_y_check".into()),
                    check: Some(r#"("y" IS NOT NULL)"#.into()),
                    foreign_key: false
                },
                Enforcement::NewNotNullColumn {
                    table: "Insight".into(),
                    column: "z".into()
                },
            ]
        );
        assert_eq!(
            checks_added(script),
            vec![
                ("Insight_x_check".to_string(), r#""x" > 0"#.to_string()),
                (
                    "Insight_y_check".to_string(),
                    r#"("y" IS NOT NULL)"#.to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_script_that_fills_its_rows_first_and_serial_columns_are_not_claimed_against() {
        assert!(changes_rows(
            r#"UPDATE "T" SET "c" = 0 WHERE "c" IS NULL; ALTER TABLE "T" ALTER COLUMN "c" SET NOT NULL;"#
        ));
        assert!(changes_rows(
            r#"ALTER TABLE "T" ALTER COLUMN "c" TYPE BIGINT USING coalesce("c", 0), ALTER COLUMN "c" SET NOT NULL;"#
        ));
        assert!(!changes_rows(
            r#"DO $$ BEGIN PERFORM 1; END $$; ALTER TABLE "T" ALTER COLUMN "c" SET NOT NULL;"#
        ));
        assert!(enforcements(r#"ALTER TABLE "T" ADD COLUMN "s" SERIAL NOT NULL;"#).is_empty());
        assert_eq!(
            enforcements(r#"ALTER TABLE "T" ADD COLUMN "s" INTEGER NOT NULL;"#).len(),
            1
        );
    }

    #[test]
    fn not_null_checks_are_recognised_as_written_and_as_printed() {
        assert_eq!(
            not_null_of(r#"("workspaceId" IS NOT NULL)"#).as_deref(),
            Some("workspaceId")
        );
        assert_eq!(
            not_null_of("currency IS NOT NULL").as_deref(),
            Some("currency")
        );
        assert_eq!(not_null_of(r#""x" > 0"#), None);
    }
}
