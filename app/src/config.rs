//! What the operator decides: the public address (https turns on Secure cookies and HSTS, and
//! is the origin cross-site checks compare against), the key that makes account pseudonyms in
//! the log, the proxies whose `X-Forwarded-For` names the client, and the currency of spend.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone)]
pub struct Config {
    /// `https://hub.example.com`: the origin browsers see, without a trailing slash.
    pub public_url: Option<String>,
    /// HMAC key of the account pseudonyms in the log and of device cookies.
    pub pseudonym_key: Vec<u8>,
    /// Peers whose `X-Forwarded-For` is believed (a reverse proxy in front of the app).
    pub trusted_proxies: Vec<IpAddr>,
    /// The ISO 4217 code of the currency the providers report spend in (`USD` unless
    /// `DATAHUB_CURRENCY` says otherwise), shown beside every amount.
    pub currency: String,
}

/// The currency unless `DATAHUB_CURRENCY` names another.
pub const DEFAULT_CURRENCY: &str = "USD";

impl Default for Config {
    /// No public URL, no proxies, and a random key for this process only.
    fn default() -> Self {
        Config {
            public_url: None,
            pseudonym_key: random_key(),
            trusted_proxies: Vec::new(),
            currency: DEFAULT_CURRENCY.to_string(),
        }
    }
}

impl Config {
    /// Whether browsers reach the app over https (then cookies are `Secure` and HSTS is sent).
    pub fn https(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://"))
    }

    /// `--public-url` (or `DATAHUB_PUBLIC_URL`), `DATAHUB_PSEUDONYM_KEY` (hex, at least 16
    /// bytes) and `DATAHUB_TRUSTED_PROXIES` (addresses, comma-separated).
    pub fn from_env(public_url: Option<String>) -> Result<Config> {
        let public_url = public_url
            .or_else(|| std::env::var("DATAHUB_PUBLIC_URL").ok())
            .filter(|url| !url.trim().is_empty())
            .map(|url| public_origin(&url))
            .transpose()?;
        let pseudonym_key = match std::env::var("DATAHUB_PSEUDONYM_KEY") {
            Ok(hex) if !hex.trim().is_empty() => parse_hex_key(hex.trim())?,
            _ => {
                tracing::warn!(
                    "DATAHUB_PSEUDONYM_KEY is not set: account pseudonyms in the log change at every restart; set it to 32 random bytes in hex (`openssl rand -hex 32`)"
                );
                random_key()
            }
        };
        let trusted_proxies = match std::env::var("DATAHUB_TRUSTED_PROXIES") {
            Ok(list) => list
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| {
                    item.parse::<IpAddr>().with_context(|| {
                        format!("`DATAHUB_TRUSTED_PROXIES`: `{item}` is not an IP address; list addresses, comma-separated")
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            Err(_) => Vec::new(),
        };
        let currency = match std::env::var("DATAHUB_CURRENCY") {
            Ok(code) if !code.trim().is_empty() => {
                let code = code.trim();
                if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                    bail!("`DATAHUB_CURRENCY` `{code}` is not a currency code; give three capital letters, e.g. `DATAHUB_CURRENCY=EUR`");
                }
                code.to_string()
            }
            _ => DEFAULT_CURRENCY.to_string(),
        };
        Ok(Config {
            public_url,
            pseudonym_key,
            trusted_proxies,
            currency,
        })
    }
}

/// `https://hub.example.com/` → `https://hub.example.com`; a path or another scheme is refused.
pub fn public_origin(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("`--public-url` `{url}` is not an address; give it as `https://HOST[:PORT]`");
    };
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
        bail!(
            "`--public-url` `{url}` must be `https://HOST[:PORT]` (or `http://`), without a path"
        );
    }
    Ok(format!("{scheme}://{}", rest.to_ascii_lowercase()))
}

fn parse_hex_key(hex: &str) -> Result<Vec<u8>> {
    let valid = hex.len() >= 32
        && hex.len().is_multiple_of(2)
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        bail!("`DATAHUB_PSEUDONYM_KEY` must be at least 16 bytes in hex; make one with `openssl rand -hex 32`");
    }
    Ok((0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex digits"))
        .collect())
}

fn random_key() -> Vec<u8> {
    let token = datahub_core::password::random_token();
    parse_hex_key(&token).expect("random tokens are 64 hex digits")
}
