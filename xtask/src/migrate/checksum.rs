//! Whether a migration file still is what was applied, judged as prisma-engines judges it
//! (`schema-connector/src/checksum.rs`). Pure.
//!
//! The recorded checksum is the lowercase, zero-padded hex SHA-256 of the file as it was
//! applied. A file counts as unchanged when the recorded value matches the file as it is, the
//! file with its CRLF line endings turned into LF, or the file with every LF turned into CRLF:
//! a checkout through git's `autocrlf` is not an edit. A recorded value that is not 64
//! characters long is Prisma's older format, each byte printed without its leading zero
//! (prisma-engines issue #1887); it is compared in that format. Everything else, an uppercase
//! hex digit included, is an edit.

use crate::migrations::checksum;

/// Whether `script` (the file as it is now) matches the recorded checksum `recorded`.
pub(crate) fn matches(script: &str, recorded: &str) -> bool {
    let older_format = !recorded.is_empty() && recorded.len() != 64;
    let candidates = [
        script.to_string(),
        script.replace("\r\n", "\n"),
        script.replace('\n', "\r\n"),
    ];
    candidates.iter().any(|candidate| {
        let digest = checksum(candidate.as_bytes());
        if older_format {
            unpadded(&digest) == recorded
        } else {
            digest == recorded
        }
    })
}

/// Prisma's older checksum format: each byte in hex without its leading zero (`0b` → `b`).
fn unpadded(zero_padded_hex: &str) -> String {
    zero_padded_hex
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).unwrap_or_default();
            pair.strip_prefix('0')
                .filter(|rest| !rest.is_empty())
                .unwrap_or(pair)
                .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LF: &str = "CREATE TABLE \"A\" (\n    \"id\" TEXT\n);\n";

    #[test]
    fn line_endings_are_not_an_edit() {
        let applied = checksum(LF.as_bytes());
        assert!(matches(LF, &applied));
        let crlf = LF.replace('\n', "\r\n");
        assert!(matches(&crlf, &applied), "an autocrlf checkout");
        // Applied as CRLF, checked out as LF.
        assert!(matches(LF, &checksum(crlf.as_bytes())));
        // Partly CRLF: normalising to LF gives back the applied file.
        let mixed = LF.replacen('\n', "\r\n", 1);
        assert!(matches(&mixed, &applied));
        // The other way round it does not: the recorded file had mixed endings.
        assert!(!matches(LF, &checksum(mixed.as_bytes())));
    }

    #[test]
    fn a_real_edit_is_an_edit() {
        let applied = checksum(LF.as_bytes());
        assert!(!matches(&format!("{LF}-- edited\n"), &applied));
        assert!(!matches(LF, &applied.to_uppercase()));
        assert!(!matches(LF, ""));
        // A bare CR is never normalised.
        assert!(!matches(&LF.replace('\n', "\r"), &applied));
    }

    #[test]
    fn the_older_format_drops_leading_zeros() {
        // The init migration's digest has a `0b` byte: Prisma's older format writes `b`.
        assert_eq!(unpadded("e4a6cdcf676b8d1f0be1"), "e4a6cdcf676b8d1fbe1");
        assert_eq!(unpadded("000a10"), "0a10");
        let script = (0..)
            .map(|n| format!("SELECT {n};\n"))
            .find(|s| {
                checksum(s.as_bytes())
                    .as_bytes()
                    .chunks(2)
                    .any(|p| p[0] == b'0')
            })
            .unwrap();
        let older = unpadded(&checksum(script.as_bytes()));
        assert!(older.len() < 64);
        assert!(matches(&script, &older));
        assert!(matches(&script.replace('\n', "\r\n"), &older));
        assert!(!matches(&format!("{script} "), &older));
    }
}
