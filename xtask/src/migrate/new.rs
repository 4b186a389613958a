//! `migrate new NAME`: creates `migrations/<UTC timestamp>_<name>/migration.sql`, naming it as
//! Prisma's `migrate dev --name` does, so a folder made by either tool looks the same.
//!
//! The name goes through Prisma's rule (its bundled slugify with `_` as the separator): the
//! accented Latin letters transliterated (`ä` → `ae`, `ß` → `ss`), `&` → `and`, words split at
//! case changes (`addUsersTable` → `add_users_table`), lowercase, `it's` → `its`, every run of
//! other characters one `_`, none at either end, at most 200 characters. So `Add Users-table! v2`
//! becomes `add_users_table_v2`. Prisma also transliterates other scripts (Cyrillic, Greek, …);
//! those are refused here with a request for ASCII, so the two tools never name one migration
//! two ways. A name with nothing left (`___`) is refused (Prisma would create `<timestamp>_`).
//!
//! The timestamp is the current UTC second, but never earlier than one second after the newest
//! timestamped migration already in the folder (a clock behind, or two in one second), and the
//! new folder must sort after every existing one in Prisma's order; a folder whose name sorts
//! after any timestamp (`zz_manual`) makes it refuse, naming that folder.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::error::usage;
use crate::migrations::prisma_order;

/// Every new migration bounds its own lock waits, whichever tool deploys it (Prisma sets no
/// `lock_timeout`). The one kind of file that must not have it says so.
const LOCK_TIMEOUT_PREAMBLE: &str = "\
-- No statement waits more than 500 ms for a table lock: the migration fails (and `cargo xtask
-- migrate deploy` retries it) instead of queueing the app behind it. Delete this line only in a
-- file that is a single CREATE INDEX CONCURRENTLY, which cannot share its file.
SET LOCAL lock_timeout = '500ms';
";

/// Prisma truncates names to 200 characters.
const MAX_NAME_CHARS: usize = 200;

pub(crate) fn new_migration(migrations_dir: &Path, name: &str) -> Result<PathBuf> {
    let slug = prisma_slug(name).map_err(usage)?;
    let existing = folder_names(migrations_dir);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let folder = format!("{}_{slug}", utc_timestamp(stamp_after(now, &existing)));
    if let Some(later) = existing
        .iter()
        .find(|other| prisma_order(other, &folder) != Ordering::Less)
    {
        return Err(usage(format!(
            "a new migration `{folder}` would sort before the existing folder `{later}`, so it would be ordered before a migration it follows; rename `{later}` to start with a timestamp (`YYYYMMDDHHMMSS_`), then run `cargo xtask migrate new` again"
        )));
    }
    let dir = migrations_dir.join(&folder);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let script = dir.join("migration.sql");
    std::fs::write(
        &script,
        format!("-- {slug}\n-- Write the SQL here; it runs as one script, so an error rolls all of it back.\n\n{LOCK_TIMEOUT_PREAMBLE}"),
    )
    .with_context(|| format!("cannot write `{}`", script.display()))?;
    Ok(script)
}

/// The directory names in the migrations folder (none when it does not exist yet).
fn folder_names(migrations_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(migrations_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect()
}

/// `now`, or one second after the newest `YYYYMMDDHHMMSS_` prefix in `existing` if that is not
/// earlier than `now`.
fn stamp_after(now: u64, existing: &[String]) -> u64 {
    let newest = existing
        .iter()
        .filter_map(|name| {
            seconds_of_timestamp(name.get(..14)?).filter(|_| name.as_bytes().get(14) == Some(&b'_'))
        })
        .max();
    match newest {
        Some(newest) if newest >= now => newest + 1,
        _ => now,
    }
}

/// The migration-name part of `migrate dev --name NAME`, by Prisma's rule (see the module doc).
pub fn prisma_slug(name: &str) -> Result<String, String> {
    // 1. Transliteration, then Prisma's own replacement of `&`.
    let mut text = String::new();
    for c in name.chars() {
        match c {
            '&' => text.push_str(" and "),
            c if c.is_ascii() => text.push(c),
            c => match transliterate(c) {
                Some(ascii) => text.push_str(ascii),
                None => {
                    return Err(format!(
                        "`{name}` has the character `{c}`, which Prisma transliterates in ways `cargo xtask` does not: write the name in ASCII, e.g. `add_insight_read_at`"
                    ))
                }
            },
        }
    }
    // 2. Words split at case changes, as decamelize does, then lowercase.
    let text = decamelize(&text).to_ascii_lowercase();
    // 3. `don't` → `dont`, `it's` → `its`.
    let chars: Vec<char> = text.chars().collect();
    let mut text = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let contraction = c == '\''
            && i > 0
            && chars[i - 1].is_ascii_alphanumeric()
            && matches!(chars.get(i + 1), Some('t' | 's'))
            && chars.get(i + 2).is_none_or(|c| c.is_ascii_whitespace());
        if !contraction {
            text.push(c);
        }
    }
    // 4. Every run of other characters becomes one `_`, none at either end; 200 at most.
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('_') {
            slug.push('_');
        }
    }
    let slug: String = slug
        .trim_end_matches('_')
        .chars()
        .take(MAX_NAME_CHARS)
        .collect();
    if slug.is_empty() {
        return Err(format!(
            "`{name}` has no letters or digits to name a migration by: use e.g. `add_insight_read_at`"
        ));
    }
    Ok(slug)
}

/// decamelize's four passes (each a global, left-to-right regex replacement in JavaScript):
/// `([A-Z]{2,})(\d+)`, `([a-z\d]+)([A-Z]{2,})`, `([a-z\d])([A-Z])` and
/// `([A-Z]+)([A-Z][a-rt-z\d]+)`, each inserting a space between its two groups.
fn decamelize(text: &str) -> String {
    let upper = |c: &char| c.is_ascii_uppercase();
    let lower_or_digit = |c: &char| c.is_ascii_lowercase() || c.is_ascii_digit();
    // Pass 1: an uppercase run of two or more, then digits.
    let text = split_runs(text, |chars, i| {
        i >= 2 && chars[i].is_ascii_digit() && upper(&chars[i - 1]) && upper(&chars[i - 2])
    });
    // Pass 2: a lowercase letter or digit, then an uppercase run of two or more.
    let text = split_runs(&text, |chars, i| {
        i >= 1
            && lower_or_digit(&chars[i - 1])
            && chars.get(i).is_some_and(upper)
            && chars.get(i + 1).is_some_and(upper)
    });
    // Pass 3: a lowercase letter or digit, then an uppercase letter.
    let text = split_runs(&text, |chars, i| {
        i >= 1 && lower_or_digit(&chars[i - 1]) && chars.get(i).is_some_and(upper)
    });
    // Pass 4: an uppercase run, then its last letter starts a word of lowercase letters
    // (not `s`: `URLs` stays) or digits.
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let run_end = (i..chars.len())
            .find(|&j| !upper(&chars[j]))
            .unwrap_or(chars.len());
        let word = |c: &char| c.is_ascii_digit() || (c.is_ascii_lowercase() && *c != 's');
        if run_end - i >= 2 && chars.get(run_end).is_some_and(word) {
            out.extend(&chars[i..run_end - 1]);
            out.push(' ');
            out.push(chars[run_end - 1]);
            let word_end = (run_end..chars.len())
                .find(|&j| !word(&chars[j]))
                .unwrap_or(chars.len());
            out.extend(&chars[run_end..word_end]);
            i = word_end;
        } else if run_end > i {
            out.extend(&chars[i..run_end]);
            i = run_end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Inserts a space before each position `i` where `boundary(chars, i)` holds.
fn split_runs(text: &str, boundary: impl Fn(&[char], usize) -> bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    for i in 0..chars.len() {
        if boundary(&chars, i) {
            out.push(' ');
        }
        out.push(chars[i]);
    }
    out
}

/// The accented Latin letters Prisma's slugify transliterates, and what into (the first of its
/// rules that names each letter).
fn transliterate(c: char) -> Option<&'static str> {
    Some(match c {
        'À' | 'Á' | 'Â' | 'Ã' | 'Å' | 'Ā' | 'Ă' | 'Ą' => "A",
        'à' | 'á' | 'â' | 'ã' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'Æ' => "AE",
        'Ä' => "Ae",
        'ä' | 'æ' => "ae",
        'Ç' | 'Ć' | 'Ċ' | 'Č' => "C",
        'ç' | 'ć' | 'ċ' | 'č' => "c",
        'Ð' | 'Ď' | 'Đ' => "D",
        'ð' | 'ď' | 'đ' => "d",
        'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ė' | 'Ę' | 'Ě' => "E",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'Ğ' | 'Ġ' | 'Ģ' => "G",
        'ğ' | 'ġ' | 'ģ' => "g",
        'Ħ' => "H",
        'ħ' => "h",
        'Ì' | 'Í' | 'Î' | 'Ï' | 'Ĩ' | 'Ī' | 'Į' | 'İ' => "I",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'į' | 'ı' => "i",
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'Ķ' => "K",
        'ķ' => "k",
        'Ļ' | 'Ł' => "L",
        'ļ' | 'ł' => "l",
        'Ñ' | 'Ń' | 'Ņ' | 'Ň' => "N",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ø' | 'Ő' => "O",
        'ò' | 'ó' | 'ô' | 'õ' | 'ø' | 'ő' => "o",
        'Ö' => "Oe",
        'ö' => "oe",
        'Ř' => "R",
        'ř' => "r",
        'Ś' | 'Ş' | 'Š' => "S",
        'ś' | 'ş' | 'š' => "s",
        'ß' => "ss",
        'Ţ' | 'Ť' => "T",
        'ţ' | 'ť' => "t",
        'Þ' => "TH",
        'þ' => "th",
        'Ù' | 'Ú' | 'Û' | 'Ũ' | 'Ū' | 'Ů' | 'Ű' | 'Ų' => "U",
        'ù' | 'ú' | 'û' | 'ũ' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
        'Ü' => "Ue",
        'ü' => "ue",
        'Ý' => "Y",
        'ý' | 'ÿ' => "y",
        'Ź' | 'Ż' | 'Ž' => "Z",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

/// `YYYYMMDDHHMMSS` in UTC for seconds since the Unix epoch.
pub(crate) fn utc_timestamp(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rem = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the Unix epoch of a `YYYYMMDDHHMMSS` UTC timestamp, if it is one.
fn seconds_of_timestamp(stamp: &str) -> Option<u64> {
    if stamp.len() != 14 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |range: std::ops::Range<usize>| stamp[range].parse::<u32>().ok();
    let (year, month, day) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let (hour, minute, second) = (field(8..10)?, field(10..12)?, field(12..14)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    u64::try_from(seconds).ok()
}

/// Howard Hinnant's civil-to-days conversion: days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil conversion for the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(utc_timestamp(0), "19700101000000");
        // 2025-12-19 17:10:00 UTC
        assert_eq!(utc_timestamp(1_766_164_200), "20251219171000");
        // 2024-02-29 23:59:59 UTC (a leap day)
        assert_eq!(utc_timestamp(1_709_251_199), "20240229235959");
        for seconds in [0, 1_766_164_200, 1_709_251_199, 4_102_444_799] {
            assert_eq!(seconds_of_timestamp(&utc_timestamp(seconds)), Some(seconds));
        }
        assert_eq!(seconds_of_timestamp("2025121917100"), None);
        assert_eq!(seconds_of_timestamp("20251319171000"), None);
    }

    #[test]
    fn names_as_prisma_migrate_dev_names_them() {
        // Prisma 6.19.3's own results for these names (its bundled slugify, `_` separator).
        for (name, slug) in [
            ("Add Users-table! v2", "add_users_table_v2"),
            ("addUsersTable2FA", "add_users_table2_fa"),
            ("XMLHttpRequest_v10ID", "xml_http_request_v10_id"),
            ("OAuth2Client", "o_auth2_client"),
            ("Ünïcödé & Straße's don't", "uenicoede_and_strasses_dont"),
            ("café_crème", "cafe_creme"),
            ("  leading--and__trailing  ", "leading_and_trailing"),
            ("it's done", "its_done"),
            ("add_insight_read_at", "add_insight_read_at"),
            ("URLs", "urls"),
        ] {
            assert_eq!(prisma_slug(name).as_deref(), Ok(slug), "{name}");
        }
        let long = format!("x{}", "y".repeat(250));
        assert_eq!(prisma_slug(&long).unwrap(), long[..200]);
        assert!(prisma_slug("___")
            .unwrap_err()
            .contains("no letters or digits"));
        assert!(prisma_slug("Привет мир")
            .unwrap_err()
            .contains("write the name in ASCII"));
    }

    #[test]
    fn stamps_sort_after_the_newest_migration() {
        let now = 1_766_164_200; // 2025-12-19 17:10:00
        let existing = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            stamp_after(now, &existing(&["0_init", "20251201000000_init"])),
            now
        );
        // The newest is this very second, or later (a clock behind): one second after it.
        assert_eq!(stamp_after(now, &existing(&["20251219171000_a"])), now + 1);
        assert_eq!(
            stamp_after(now, &existing(&["20301231235959_future"])),
            seconds_of_timestamp("20301231235959").unwrap() + 1
        );
    }
}
