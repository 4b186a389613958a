//! What a migration's statements leave in the catalog, read from the migration itself: the
//! named objects it creates (constraints, indexes, tables, columns) and the ones it drops. A
//! script that is one transaction leaves all of them or none, so the catalog proves whether it
//! was applied: every effect present → applied; none → rolled back; some → changed another way.
//! A lexer's reading, as in `enforces`; what it cannot read it does not claim.

use crate::db::Client;
use anyhow::{Context, Result};

use super::statements;
use crate::db::quote_ident;

/// One named object a migration creates or drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub object: Object,
    /// Whether the object exists once the migration is applied.
    pub exists_after: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Constraint { table: String, name: String },
    Relation { name: String },
    Column { table: String, name: String },
}

impl Object {
    pub fn describe(&self) -> String {
        match self {
            Object::Constraint { table, name } => format!("constraint `{name}` on `{table}`"),
            Object::Relation { name } => format!("`{name}`"),
            Object::Column { table, name } => format!("column `{table}`.`{name}`"),
        }
    }

    /// Whether it exists now (catalog reads).
    pub fn exists(&self, client: &mut Client) -> Result<bool> {
        let row = match self {
            Object::Constraint { table, name } => client.query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2))",
                &[name, &quote_ident(table)],
            ),
            Object::Relation { name } => {
                client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&quote_ident(name)])
            }
            Object::Column { table, name } => client.query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)",
                &[&quote_ident(table), name],
            ),
        };
        Ok(row
            .with_context(|| format!("cannot look up {}", self.describe()))?
            .get(0))
    }
}

/// The effects of `script`, in order. An object both created and dropped by the script is
/// left out (its final state says nothing about the script's outcome).
pub fn effects(script: &str) -> Vec<Effect> {
    let mut found: Vec<Effect> = Vec::new();
    for statement in statements::split(script) {
        let words = words(&statement.sql);
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let at = |i: usize| upper.get(i).map(String::as_str).unwrap_or("");
        let mut push = |object: Object, exists_after: bool| {
            if let Some(i) = found.iter().position(|e| e.object == object) {
                found.remove(i);
            } else {
                found.push(Effect {
                    object,
                    exists_after,
                });
            }
        };
        match (at(0), at(1)) {
            ("ALTER", "TABLE") => {
                let mut i = 2;
                if at(i) == "IF" {
                    i += 2;
                }
                if at(i) == "ONLY" {
                    i += 1;
                }
                let Some(table) = words.get(i).map(|w| unquote(w)) else {
                    continue;
                };
                i += 1;
                while i < words.len() {
                    match (at(i), at(i + 1)) {
                        ("ADD", "CONSTRAINT") => {
                            if let Some(name) = words.get(i + 2) {
                                push(
                                    Object::Constraint {
                                        table: table.clone(),
                                        name: unquote(name),
                                    },
                                    true,
                                );
                            }
                            i += 3;
                        }
                        ("DROP", "CONSTRAINT") => {
                            let j = if at(i + 2) == "IF" { i + 4 } else { i + 2 };
                            if let Some(name) = words.get(j) {
                                push(
                                    Object::Constraint {
                                        table: table.clone(),
                                        name: unquote(name),
                                    },
                                    false,
                                );
                            }
                            i = j + 1;
                        }
                        ("ADD", "COLUMN") => {
                            if at(i + 2) != "IF" {
                                if let Some(name) = words.get(i + 2) {
                                    push(
                                        Object::Column {
                                            table: table.clone(),
                                            name: unquote(name),
                                        },
                                        true,
                                    );
                                }
                            }
                            i += 3;
                        }
                        ("DROP", "COLUMN") => {
                            if at(i + 2) != "IF" {
                                if let Some(name) = words.get(i + 2) {
                                    push(
                                        Object::Column {
                                            table: table.clone(),
                                            name: unquote(name),
                                        },
                                        false,
                                    );
                                }
                            }
                            i += 3;
                        }
                        _ => i += 1,
                    }
                }
            }
            ("CREATE", _) => {
                let mut i = 1;
                if at(i) == "UNIQUE" {
                    i += 1;
                }
                if at(i) != "INDEX" && at(i) != "TABLE" {
                    continue;
                }
                i += 1;
                if at(i) == "CONCURRENTLY" {
                    i += 1;
                }
                if at(i) == "IF" {
                    continue;
                }
                if let Some(name) = words.get(i) {
                    push(
                        Object::Relation {
                            name: unquote(name),
                        },
                        true,
                    );
                }
            }
            ("DROP", "INDEX") | ("DROP", "TABLE") => {
                let mut i = 2;
                if at(i) == "CONCURRENTLY" {
                    i += 1;
                }
                if at(i) == "IF" {
                    continue;
                }
                if let Some(name) = words.get(i) {
                    push(
                        Object::Relation {
                            name: unquote(name),
                        },
                        false,
                    );
                }
            }
            _ => {}
        }
    }
    found
}

/// The statement's words and quoted identifiers, with `(` … `)` groups skipped, so that a
/// column list or an expression never looks like a name.
fn words(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '"' => {
                let mut word = String::from('"');
                while let Some(d) = chars.next() {
                    word.push(d);
                    if d == '"' {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            continue;
                        }
                        break;
                    }
                }
                if depth == 0 {
                    out.push(word);
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut word = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' || d == '$' {
                        word.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if depth == 0 {
                    out.push(word);
                }
            }
            '.' if depth == 0 => {
                // `schema.name`: keep the last part only.
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn unquote(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => word.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_swap_creates_a_constraint_and_drops_an_index() {
        let script = r#"SET LOCAL lock_timeout = '500ms';
            ALTER TABLE "Connection" ADD CONSTRAINT "Connection_workspaceId_userId_provider_key" UNIQUE USING INDEX "Connection_workspaceId_userId_provider_key";
            DROP INDEX "Connection_userId_provider_key";
            ALTER TABLE public."MetricDaily" ADD COLUMN "connectionId" TEXT, ADD CONSTRAINT "x_fkey" FOREIGN KEY ("connectionId") REFERENCES "Connection"("id");
            CREATE INDEX CONCURRENTLY "a_idx" ON "A"("b");"#;
        let found = effects(script);
        assert_eq!(
            found,
            vec![
                Effect {
                    object: Object::Constraint {
                        table: "Connection".into(),
                        name: "Connection_workspaceId_userId_provider_key".into()
                    },
                    exists_after: true
                },
                Effect {
                    object: Object::Relation {
                        name: "Connection_userId_provider_key".into()
                    },
                    exists_after: false
                },
                Effect {
                    object: Object::Column {
                        table: "MetricDaily".into(),
                        name: "connectionId".into()
                    },
                    exists_after: true
                },
                Effect {
                    object: Object::Constraint {
                        table: "MetricDaily".into(),
                        name: "x_fkey".into()
                    },
                    exists_after: true
                },
                Effect {
                    object: Object::Relation {
                        name: "a_idx".into()
                    },
                    exists_after: true
                },
            ]
        );
    }
}
