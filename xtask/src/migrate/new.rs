//! `migrate new NAME`: creates `migrations/<UTC timestamp>_<name>/migration.sql`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::error::usage;

pub(crate) fn new_migration(migrations_dir: &Path, name: &str) -> Result<PathBuf> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(usage(format!(
            "`{name}` is not a migration name: use lowercase letters, digits and `_`, e.g. `add_insight_read_at`"
        )));
    }
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let dir = migrations_dir.join(format!("{}_{name}", utc_timestamp(seconds)));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let script = dir.join("migration.sql");
    std::fs::write(
        &script,
        format!("-- {name}\n-- Write the SQL here; it runs as one script, so an error rolls all of it back.\n"),
    )
    .with_context(|| format!("cannot write `{}`", script.display()))?;
    Ok(script)
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
    }
}
