//! Numbers as people read them in reports and on pages.

/// 5000000 → `5,000,000`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (index, ch) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// 1234.5 → `1,234.50`; -0.5 → `-0.50`.
pub fn money(amount: f64) -> String {
    let cents = (amount * 100.0).round() as i64;
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!(
        "{sign}{}.{:02}",
        thousands((cents / 100) as i64),
        cents % 100
    )
}

/// An amount with its currency, as every page and the chat show it: `USD 1,234.50`. A value
/// that is not a finite number (PostgreSQL's `numeric` holds `NaN`) is `not recorded`.
pub fn money_in(currency: &str, amount: f64) -> String {
    if amount.is_finite() {
        format!("{currency} {}", money(amount))
    } else {
        "not recorded".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(5_000_000), "5,000,000");
        assert_eq!(thousands(-1234), "-1,234");
        assert_eq!(thousands(i64::MIN), "-9,223,372,036,854,775,808");
    }

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(money(1234.5), "1,234.50");
        assert_eq!(money(0.0), "0.00");
        assert_eq!(money(-0.5), "-0.50");
        assert_eq!(money(-1234.567), "-1,234.57");
        assert_eq!(money_in("USD", 1234.5), "USD 1,234.50");
        assert_eq!(money_in("USD", f64::NAN), "not recorded");
    }
}
