//! A Prisma-style PostgreSQL URL, read once and the same way by the app and by xtask: the
//! driver's configuration, the `?schema=` everything lives in, and the TLS policy of `sslmode`.
//!
//! The URL's shape is checked before anything is taken from it, so that a password with an
//! unencoded `@`, `/`, `?` or `#` is refused instead of being split into a host or a database
//! name that a message would then show. No error here ever contains a part of the URL other
//! than a parameter's name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, Host, LoadBalanceHosts, SslMode, TargetSessionAttrs};
use tokio_postgres::Config;

/// Sets the search_path of a fresh connection to the URL's schema: `SELECT` it with
/// [`DatabaseUrl::search_path`] as `$1`. A query after connecting, not a startup option, so
/// that PgBouncer (Prisma's `pgbouncer=true`) accepts the connection.
pub const SET_SEARCH_PATH_SQL: &str = "SELECT set_config('search_path', $1, false)";

/// The URL could not be used as given. The message names the parameter, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

fn error(message: impl Into<String>) -> UrlError {
    UrlError(message.into())
}

/// libpq's `sslmode`, as Prisma passes it on. `allow` is taken as `prefer` (the driver does
/// not try a plain connection first); `verify-ca` and `verify-full` check the server's
/// certificate, against `sslrootcert` (or Prisma's `sslcert`) when given, else the system's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<TlsMode, UrlError> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => {
                return Err(error(
                    "`sslmode` in the database URL must be disable, allow, prefer, require, verify-ca or verify-full",
                ))
            }
        })
    }

    pub fn verifies_certificate(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }
}

/// Parameters the PostgreSQL driver takes from the URL, as libpq names them.
const DRIVER_PARAMETERS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Prisma's own parameters for its connection pool and query engine, which mean nothing to a
/// single connection: read by the app's pool where they apply, otherwise ignored.
const PRISMA_POOL_PARAMETERS: &[&str] = &[
    "connection_limit",
    "pool_timeout",
    "socket_timeout",
    "pgbouncer",
    "statement_cache_size",
    "max_connection_lifetime",
    "max_idle_connection_lifetime",
];

/// A parsed database URL. `Debug` and every accessor but [`DatabaseUrl::secret`] are safe to
/// print: they never include the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    secret: String,
    config: Config,
    schema: Option<String>,
    tls: TlsMode,
    root_certificate: Option<PathBuf>,
    unix_socket: bool,
    connection_limit: Option<usize>,
    pool_timeout: Option<Duration>,
    pgbouncer: bool,
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.describe())
    }
}

impl DatabaseUrl {
    /// Reads a `postgresql://` or `postgres://` URL. `application_name` is used unless the URL
    /// names its own; a connect timeout of 5 s applies unless it sets `connect_timeout`.
    pub fn parse(raw: &str, application_name: &str) -> Result<DatabaseUrl, UrlError> {
        let raw = raw.trim();
        let rest = raw
            .strip_prefix("postgresql://")
            .or_else(|| raw.strip_prefix("postgres://"))
            .ok_or_else(|| {
                error("the database URL must start with `postgresql://` or `postgres://`, e.g. `postgresql://USER:PASSWORD@localhost:5432/datahub`")
            })?;
        if rest.contains('#') {
            return Err(error(
                "the database URL contains `#`: in a user name or password, write it as `%23`",
            ));
        }
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let at_signs = rest.matches('@').count();
        if at_signs > 1 || (at_signs == 1 && !authority.contains('@')) {
            return Err(error(
                "the database URL has an `@` where only the one before the host may be: percent-encode `@`, `/`, `?` and `:` in the user name and password (`%40`, `%2F`, `%3F`, `%3A`)",
            ));
        }
        let mut reader = Reader::default();
        reader.authority(authority)?;
        if !path.is_empty() {
            reader
                .config
                .dbname(percent_decode(path, "the database name")?);
        }
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key, "a parameter name")?;
            let value = percent_decode(value, &format!("`{key}`"))?;
            reader.parameter(&key, value)?;
        }
        reader.finish(raw, application_name)
    }

    /// The driver's configuration (password included: hand it to the client, never print it).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The URL as given, password included: only for a child process's environment.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The schema everything lives in: Prisma's `?schema=`, else `public`.
    pub fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or("public")
    }

    pub fn has_explicit_schema(&self) -> bool {
        self.schema.is_some()
    }

    /// The value for [`SET_SEARCH_PATH_SQL`], when the URL names a schema: the name quoted, so
    /// `?schema=Tenant` means `"Tenant"` and not `tenant`, as it does for Prisma.
    pub fn search_path(&self) -> Option<String> {
        self.schema.as_deref().map(quote_ident)
    }

    pub fn tls(&self) -> TlsMode {
        self.tls
    }

    pub fn database_name(&self) -> &str {
        self.config
            .get_dbname()
            .or_else(|| self.config.get_user())
            .unwrap_or("")
    }

    /// Prisma's `connection_limit`, for a pool.
    pub fn connection_limit(&self) -> Option<usize> {
        self.connection_limit
    }

    /// Prisma's `pool_timeout`, for a pool.
    pub fn pool_timeout(&self) -> Option<Duration> {
        self.pool_timeout
    }

    /// Prisma's `pgbouncer=true`: the URL reaches PostgreSQL through a pooler in transaction
    /// mode, where a server session serves another client after each transaction.
    pub fn is_pooled(&self) -> bool {
        self.pgbouncer
    }

    /// `host:port/database as user`, for messages. Never the password.
    pub fn describe(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_default();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("(default user)");
        format!("{host}:{port}/{} as {user}", self.database_name())
    }

    /// The TLS connector `sslmode` asks for, or `None` for a plain connection (`disable`, or a
    /// Unix socket). `prefer` and `require` encrypt without checking the certificate, as libpq
    /// does without a root certificate, and skip loading the system's CA store, which costs more
    /// than a whole status query. `verify-ca` checks the chain; `verify-full` the host name too.
    /// As libpq, `require` with a root certificate given (`sslrootcert`) checks the chain
    /// against it, as `verify-ca` does.
    pub fn tls_connector(&self) -> Result<Option<native_tls::TlsConnector>, UrlError> {
        if self.unix_socket || self.tls == TlsMode::Disable {
            return Ok(None);
        }
        let mut builder = native_tls::TlsConnector::builder();
        let require_with_root = self.tls == TlsMode::Require && self.root_certificate.is_some();
        if self.tls.verifies_certificate() || require_with_root {
            builder.danger_accept_invalid_hostnames(self.tls != TlsMode::VerifyFull);
            if let Some(path) = &self.root_certificate {
                builder.disable_built_in_roots(true);
                builder.add_root_certificate(read_certificate(path)?);
            }
        } else {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true)
                .disable_built_in_roots(true);
        }
        builder.build().map(Some).map_err(|e| {
            error(format!(
                "cannot set up TLS for the database connection: {e}"
            ))
        })
    }
}

/// What the URL says, gathered part by part before it becomes a [`DatabaseUrl`].
#[derive(Default)]
struct Reader {
    config: Config,
    hosts: Vec<String>,
    ports: Vec<u16>,
    schema: Option<String>,
    tls: Option<TlsMode>,
    root_certificate: Option<PathBuf>,
    strict: bool,
    application_name_given: bool,
    connect_timeout_given: bool,
    connection_limit: Option<usize>,
    pool_timeout: Option<Duration>,
    pgbouncer: bool,
}

impl Reader {
    /// `user:password@host:port,host:port`.
    fn authority(&mut self, authority: &str) -> Result<(), UrlError> {
        let (userinfo, host_list) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                self.config.user(percent_decode(user, "the user name")?);
            }
            if let Some(password) = password {
                self.config
                    .password(percent_decode_bytes(password, "the password")?);
            }
        }
        for entry in host_list.split(',').filter(|entry| !entry.is_empty()) {
            let (host, port) = split_host_port(entry)?;
            self.hosts.push(percent_decode(host, "the host")?);
            if let Some(port) = port {
                self.ports.push(parse_port(port)?);
            }
        }
        Ok(())
    }

    /// One `key=value` of the query string, decoded.
    fn parameter(&mut self, key: &str, value: String) -> Result<(), UrlError> {
        let config = &mut self.config;
        match key {
            "schema" => {
                if value.is_empty() {
                    return Err(error("`schema` in the database URL is empty; name a schema or leave the parameter out"));
                }
                self.schema = Some(value);
            }
            "sslmode" => self.tls = Some(TlsMode::parse(&value)?),
            // libpq's name for the certificate to verify the server with; Prisma calls the
            // same file `sslcert`.
            "sslrootcert" | "sslcert" => self.root_certificate = Some(PathBuf::from(value)),
            "sslaccept" => match value.as_str() {
                "strict" => self.strict = true,
                "accept_invalid_certs" => {}
                _ => return Err(error("`sslaccept` in the database URL must be `strict` or `accept_invalid_certs`")),
            },
            "sslidentity" | "sslpassword" | "sslkey" => {
                return Err(error(format!(
                    "`{key}` in the database URL asks for a client certificate, which is not supported; authenticate with a password"
                )))
            }
            "host" => self.hosts.push(value),
            "port" => self.ports.push(parse_port(&value)?),
            "user" => {
                config.user(value);
            }
            "password" => {
                config.password(value);
            }
            "dbname" => {
                config.dbname(value);
            }
            "options" => {
                config.options(value);
            }
            "application_name" => {
                self.application_name_given = true;
                config.application_name(value);
            }
            "connect_timeout" => {
                self.connect_timeout_given = true;
                let seconds = parse_seconds(key, &value)?;
                // libpq: zero (or a negative number) means wait forever.
                if seconds > 0 {
                    config.connect_timeout(Duration::from_secs(seconds));
                }
            }
            "tcp_user_timeout" => {
                config.tcp_user_timeout(Duration::from_millis(parse_seconds(key, &value)?));
            }
            "keepalives" => {
                config.keepalives(value != "0");
            }
            "keepalives_idle" => {
                config.keepalives_idle(Duration::from_secs(parse_seconds(key, &value)?));
            }
            "keepalives_interval" => {
                config.keepalives_interval(Duration::from_secs(parse_seconds(key, &value)?));
            }
            "keepalives_retries" => {
                let retries = u32::try_from(parse_seconds(key, &value)?)
                    .map_err(|_| error("`keepalives_retries` in the database URL is too large"))?;
                config.keepalives_retries(retries);
            }
            "target_session_attrs" => {
                config.target_session_attrs(match value.as_str() {
                    "any" => TargetSessionAttrs::Any,
                    "read-write" => TargetSessionAttrs::ReadWrite,
                    "read-only" => TargetSessionAttrs::ReadOnly,
                    _ => return Err(error("`target_session_attrs` in the database URL must be any, read-write or read-only")),
                });
            }
            "channel_binding" => {
                config.channel_binding(match value.as_str() {
                    "disable" => ChannelBinding::Disable,
                    "prefer" => ChannelBinding::Prefer,
                    "require" => ChannelBinding::Require,
                    _ => return Err(error("`channel_binding` in the database URL must be disable, prefer or require")),
                });
            }
            "load_balance_hosts" => {
                config.load_balance_hosts(match value.as_str() {
                    "disable" => LoadBalanceHosts::Disable,
                    "random" => LoadBalanceHosts::Random,
                    _ => return Err(error("`load_balance_hosts` in the database URL must be disable or random")),
                });
            }
            "hostaddr" => {
                for address in value.split(',') {
                    config.hostaddr(address.parse().map_err(|_| {
                        error("`hostaddr` in the database URL must be IP addresses")
                    })?);
                }
            }
            "connection_limit" => {
                let limit = parse_seconds(key, &value)?;
                self.connection_limit = Some(usize::try_from(limit.max(1)).unwrap_or(usize::MAX));
            }
            "pool_timeout" => {
                self.pool_timeout = Some(Duration::from_secs(parse_seconds(key, &value)?));
            }
            "pgbouncer" => self.pgbouncer = value == "true",
            _ if PRISMA_POOL_PARAMETERS.contains(&key) => {}
            _ => {
                return Err(error(format!(
                    "unknown parameter `{key}` in the database URL; PostgreSQL takes {} and Prisma adds schema, sslmode, sslcert, sslaccept, {}",
                    DRIVER_PARAMETERS.join(", "),
                    PRISMA_POOL_PARAMETERS.join(", ")
                )))
            }
        }
        Ok(())
    }

    fn finish(self, raw: &str, application_name: &str) -> Result<DatabaseUrl, UrlError> {
        let Reader {
            mut config,
            hosts,
            ports,
            ..
        } = self;
        if hosts.is_empty() {
            return Err(error(
                "the database URL names no host: write `postgresql://USER:PASSWORD@HOST:PORT/DATABASE` (or `?host=/path/to/socket/dir` for a Unix socket)",
            ));
        }
        for host in &hosts {
            if host.starts_with('/') {
                config.host_path(host);
            } else {
                config.host(host);
            }
        }
        if ports.len() > 1 && ports.len() != hosts.len() {
            return Err(error(
                "the database URL gives a different number of ports than hosts",
            ));
        }
        for port in ports {
            config.port(port);
        }
        let unix_socket = config
            .get_hosts()
            .iter()
            .all(|host| matches!(host, Host::Unix(_)));
        let mut tls = self.tls.unwrap_or(TlsMode::Prefer);
        if self.strict && matches!(tls, TlsMode::Prefer | TlsMode::Require) {
            // Prisma's `sslaccept=strict`: the certificate is checked, as libpq's verify-full.
            tls = TlsMode::VerifyFull;
        }
        // As libpq: no TLS over a Unix socket, where the connection never leaves the machine.
        config.ssl_mode(match tls {
            _ if unix_socket => SslMode::Disable,
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        if !self.application_name_given {
            config.application_name(application_name);
        }
        if !self.connect_timeout_given {
            config.connect_timeout(Duration::from_secs(5));
        }
        Ok(DatabaseUrl {
            secret: raw.to_string(),
            config,
            schema: self.schema,
            tls,
            root_certificate: self.root_certificate,
            unix_socket,
            connection_limit: self.connection_limit,
            pool_timeout: self.pool_timeout,
            pgbouncer: self.pgbouncer,
        })
    }
}

fn read_certificate(path: &Path) -> Result<native_tls::Certificate, UrlError> {
    let pem = std::fs::read(path).map_err(|e| {
        error(format!(
            "cannot read the root certificate `{}` named by `sslrootcert`: {e}",
            path.display()
        ))
    })?;
    native_tls::Certificate::from_pem(&pem).map_err(|e| {
        error(format!(
            "the root certificate `{}` is not a PEM certificate: {e}",
            path.display()
        ))
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(entry: &str) -> Result<(&str, Option<&str>), UrlError> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| error("an IPv6 host in the database URL lacks its closing `]`"))?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(error(
                    "unexpected text after an IPv6 host in the database URL",
                )),
            },
        };
    }
    Ok(match entry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (entry, None),
    })
}

fn parse_port(text: &str) -> Result<u16, UrlError> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(error(
            "the port in the database URL must be a number from 1 to 65535",
        )),
    }
}

fn parse_seconds(key: &str, value: &str) -> Result<u64, UrlError> {
    // libpq reads these with atoi: a negative number is taken as zero.
    if let Some(negative) = value.strip_prefix('-') {
        if negative.parse::<u64>().is_ok() {
            return Ok(0);
        }
    }
    value.parse::<u64>().map_err(|_| {
        error(format!(
            "`{key}` in the database URL must be a whole number"
        ))
    })
}

fn percent_decode(text: &str, what: &str) -> Result<String, UrlError> {
    String::from_utf8(percent_decode_bytes(text, what)?)
        .map_err(|_| error(format!("{what} in the database URL is not UTF-8")))
}

fn percent_decode_bytes(text: &str, what: &str) -> Result<Vec<u8>, UrlError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let byte = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| {
                    error(format!(
                        "{what} in the database URL has a `%` that is not followed by two hex digits"
                    ))
                })?;
            decoded.push(byte);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    Ok(decoded)
}

/// Quotes an SQL identifier: `Tenant` → `"Tenant"`, `a"b` → `"a""b"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<DatabaseUrl, UrlError> {
        DatabaseUrl::parse(url, "test")
    }

    #[test]
    fn reads_a_prisma_url() {
        let url =
            parse("postgresql://alice:s3cret%21@db.example.com:6543/app?schema=Tenant&connection_limit=5&pgbouncer=true")
                .unwrap();
        assert_eq!(url.describe(), "db.example.com:6543/app as alice");
        assert_eq!(url.config().get_password(), Some(&b"s3cret!"[..]));
        assert_eq!(url.schema(), "Tenant");
        assert_eq!(url.search_path().as_deref(), Some("\"Tenant\""));
        assert_eq!(url.connection_limit(), Some(5));
        assert_eq!(url.config().get_application_name(), Some("test"));
        assert_eq!(
            url.config().get_connect_timeout(),
            Some(&Duration::from_secs(5))
        );
        assert_eq!(url.tls(), TlsMode::Prefer);
        assert!(url.is_pooled());
        assert!(!parse("postgresql://u@h/d?pgbouncer=false")
            .unwrap()
            .is_pooled());
        assert!(!parse("postgresql://u@h/d").unwrap().is_pooled());
    }

    #[test]
    fn schema_names_keep_case_spaces_and_quotes() {
        let url = parse("postgresql://u@h/d?schema=a%20b").unwrap();
        assert_eq!(url.search_path().as_deref(), Some("\"a b\""));
        let url = parse("postgresql://u@h/d?schema=we%22ird").unwrap();
        assert_eq!(url.search_path().as_deref(), Some("\"we\"\"ird\""));
        assert!(parse("postgresql://u@h/d?schema=").is_err());
    }

    #[test]
    fn unix_sockets_and_several_hosts() {
        let url = parse("postgresql://postgres@/db?host=/tmp/pg&port=5433").unwrap();
        assert_eq!(url.describe(), "/tmp/pg:5433/db as postgres");
        assert!(url.tls_connector().unwrap().is_none());
        let url = parse("postgresql://u@a:1,b:2/d").unwrap();
        assert_eq!(url.config().get_ports(), &[1, 2]);
        let url = parse("postgresql://u@[::1]:5432/d").unwrap();
        assert_eq!(url.describe(), "::1:5432/d as u");
    }

    #[test]
    fn sslmodes() {
        for (mode, expected) in [
            ("disable", TlsMode::Disable),
            ("allow", TlsMode::Prefer),
            ("prefer", TlsMode::Prefer),
            ("require", TlsMode::Require),
            ("verify-ca", TlsMode::VerifyCa),
            ("verify-full", TlsMode::VerifyFull),
        ] {
            let url = parse(&format!("postgresql://u@h/d?sslmode={mode}")).unwrap();
            assert_eq!(url.tls(), expected, "{mode}");
        }
        let strict = parse("postgresql://u@h/d?sslmode=require&sslaccept=strict").unwrap();
        assert_eq!(strict.tls(), TlsMode::VerifyFull);
        assert!(parse("postgresql://u@h/d?sslmode=sometimes").is_err());
    }

    #[test]
    fn no_error_shows_any_part_of_a_password() {
        for url in [
            "postgresql://app:s3cr@t/Pa55word@host/db",
            "postgresql://app:Pa55/word@host/db",
            "postgresql://app:Pa55?word@host/db",
            "postgresql://app:Pa55#word@host/db",
            "postgresql://app:Pa55word@host:99999/db",
            "postgresql://app:Pa55word@host:port/db",
            "postgresql://app:Pa55%zzword@host/db",
            "postgresql://app:Pa55word@host/db?sslmode=Pa55word",
            "postgresql://app:Pa55word@host/db?password=Pa55word&bogus=1",
            "postgresql://app:Pa55word@host/db?connect_timeout=Pa55word",
            "mysql://app:Pa55word@host/db",
        ] {
            let message = parse(url).unwrap_err().to_string();
            for fragment in ["Pa55", "s3cr"] {
                assert!(!message.contains(fragment), "{url}: {message}");
            }
        }
    }

    #[test]
    fn bad_ports_and_unknown_parameters_are_named() {
        let message = parse("postgresql://u@h:0/d").unwrap_err().to_string();
        assert!(message.contains("from 1 to 65535"), "{message}");
        let message = parse("postgresql://u@h/d?sslmod=require")
            .unwrap_err()
            .to_string();
        assert!(message.contains("unknown parameter `sslmod`"), "{message}");
        let message = parse("postgresql://u@/d").unwrap_err().to_string();
        assert!(message.contains("names no host"), "{message}");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("MetricDaily"), "\"MetricDaily\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
