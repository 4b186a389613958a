//! `release.toml`: a release declared beside the migration that expands it. Only what the
//! migrations cannot say is declared: the release's name, its contract, the backfill rule as
//! SQL, the success line of `check`, and the migrations the previous app cannot survive. The
//! expand is the folder the file sits in; the columns the release fills are the ones its
//! contract sets NOT NULL.
//!
//! ```toml
//! name = "metric-connection"
//! contract = "20260301000100_metric_daily_connection_not_null"
//! needs_new_app = []                # migrations to run only once the new app is live
//! backfilled = "✅ …"               # optional: `check`'s line when nothing is left to fill
//!
//! [backfill]                        # optional: without it the release is DDL only
//! value = 'c."id"'                  # the value of row `t`
//! from = '"Connection" c'           # optional: joined to `t`
//! where = 'c."userId" = t."userId"' # optional: the join condition
//! sweep = '…'                       # optional: the value for rows the batches missed
//! prepare = 'SELECT …'              # optional: once, returns one bigint: what it created
//! prepare_dry_run = 'SELECT …'      # optional: the same count without creating anything
//! prepared = "personal workspaces"  # optional: what `prepare` counts
//! connection = '…'                  # optional: run on each worker connection first
//! cleanup = '…'                     # optional: run at the end
//! ```

use anyhow::Result;

use crate::error::environment;

/// A declaration as written, checked for unknown keys and types.
#[derive(Debug, Clone, Default)]
pub(crate) struct Declaration {
    pub name: String,
    pub contract: Option<String>,
    pub needs_new_app: Vec<String>,
    pub backfilled: Option<String>,
    pub backfill: Option<RuleText>,
}

/// The backfill rule's SQL, as written.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleText {
    pub value: String,
    pub from: Option<String>,
    pub condition: Option<String>,
    pub sweep: Option<String>,
    pub prepare: Option<String>,
    pub prepare_dry_run: Option<String>,
    pub prepared: Option<String>,
    pub connection: Option<String>,
    pub cleanup: Option<String>,
}

const TOP_KEYS: [&str; 5] = [
    "name",
    "contract",
    "needs_new_app",
    "backfilled",
    "backfill",
];
const RULE_KEYS: [&str; 9] = [
    "value",
    "from",
    "where",
    "sweep",
    "prepare",
    "prepare_dry_run",
    "prepared",
    "connection",
    "cleanup",
];

/// Parses the text of `file` (named in every error).
pub(crate) fn parse(file: &str, text: &str) -> Result<Declaration> {
    let table: toml::Table = toml::from_str(text).map_err(|error| {
        let why = error.message().to_string();
        let at = error
            .span()
            .map(|span| format!(" at line {}", text[..span.start].lines().count().max(1)))
            .unwrap_or_default();
        environment(format!(
            "`{file}` is not valid TOML{at}: {why}; fix the file (see `cargo xtask release --help`)"
        ))
    })?;
    let err = |why: String| environment(format!("`{file}`: {why}"));
    unknown_keys(&table, &TOP_KEYS, "", &err)?;
    let text_of = |table: &toml::Table, key: &str, prefix: &str| -> Result<Option<String>> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(err(format!("`{prefix}{key}` must be a non-empty string"))),
        }
    };
    let name = text_of(&table, "name", "")?.ok_or_else(|| {
        err("`name` is missing: name the release, e.g. `name = \"metric-connection\"`".into())
    })?;
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(err(format!(
            "the release name `{name}` may hold only lowercase letters, digits, `-` and `_`"
        )));
    }
    let needs_new_app = match table.get("needs_new_app") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s.clone()),
                _ => Err(err(
                    "`needs_new_app` must be a list of migration names".into()
                )),
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(err(
                "`needs_new_app` must be a list of migration names".into()
            ))
        }
    };
    let backfill = match table.get("backfill") {
        None => None,
        Some(toml::Value::Table(rule)) => {
            unknown_keys(rule, &RULE_KEYS, "backfill.", &err)?;
            let value = text_of(rule, "value", "backfill.")?.ok_or_else(|| {
                err("`backfill.value` is missing: the SQL value of each row `t`, e.g. `value = 'c.\"id\"'`".into())
            })?;
            Some(RuleText {
                value,
                from: text_of(rule, "from", "backfill.")?,
                condition: text_of(rule, "where", "backfill.")?,
                sweep: text_of(rule, "sweep", "backfill.")?,
                prepare: text_of(rule, "prepare", "backfill.")?,
                prepare_dry_run: text_of(rule, "prepare_dry_run", "backfill.")?,
                prepared: text_of(rule, "prepared", "backfill.")?,
                connection: text_of(rule, "connection", "backfill.")?,
                cleanup: text_of(rule, "cleanup", "backfill.")?,
            })
        }
        Some(_) => return Err(err("`backfill` must be a table (`[backfill]`)".into())),
    };
    Ok(Declaration {
        name,
        contract: text_of(&table, "contract", "")?,
        needs_new_app,
        backfilled: text_of(&table, "backfilled", "")?,
        backfill,
    })
}

fn unknown_keys(
    table: &toml::Table,
    known: &[&str],
    prefix: &str,
    err: &dyn Fn(String) -> anyhow::Error,
) -> Result<()> {
    for key in table.keys() {
        if !known.contains(&key.as_str()) {
            return Err(err(format!(
                "unknown key `{prefix}{key}`; known: {}",
                known
                    .iter()
                    .map(|k| format!("`{prefix}{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declaration_is_read_and_misspellings_are_errors() {
        let declaration = parse(
            "release.toml",
            "name = \"metric-connection\"\ncontract = \"2_b\"\n[backfill]\nvalue = 'c.\"id\"'\nfrom = '\"Connection\" c'\nwhere = 'c.\"userId\" = t.\"userId\"'\n",
        )
        .unwrap();
        assert_eq!(declaration.name, "metric-connection");
        let rule = declaration.backfill.unwrap();
        assert_eq!(rule.from.as_deref(), Some("\"Connection\" c"));
        assert_eq!(
            rule.condition.as_deref(),
            Some("c.\"userId\" = t.\"userId\"")
        );

        let error = parse("x/release.toml", "name = \"a\"\ncontrct = \"b\"\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown key `contrct`"),
            "{error}"
        );
        let error = parse("x/release.toml", "name = \"a\"\n[backfill]\nvalu = 'x'\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown key `backfill.valu`"),
            "{error}"
        );
        let error = parse("x/release.toml", "name = \"a\" \"b\"").unwrap_err();
        assert!(
            error.to_string().contains("not valid TOML at line 1"),
            "{error}"
        );
        let error = parse("x/release.toml", "name = \"A B\"").unwrap_err();
        assert!(error.to_string().contains("may hold only"), "{error}");
    }
}
