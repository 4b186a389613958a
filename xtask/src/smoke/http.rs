//! A small HTTP/1.1 client over a TCP stream, enough to sign in and click through the app the
//! way a browser's forms do: one request per connection (`Connection: close`), form bodies,
//! cookies passed by hand, redirects not followed. Plain `http://` only: the smoke test talks
//! to an app on this machine or behind a local port.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// An app's address, e.g. `http://127.0.0.1:8080`.
#[derive(Debug, Clone)]
pub struct Http {
    authority: String,
    timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn location(&self) -> &str {
        self.header("location").unwrap_or("")
    }

    /// `name=value` of the cookie `name` this response sets, if it sets one.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(key, _)| key == "set-cookie")
            .filter_map(|(_, value)| value.split(';').next())
            .find(|pair| {
                pair.split_once('=')
                    .is_some_and(|(key, _)| key.trim() == name)
            })
            .map(|pair| pair.trim().to_string())
    }
}

impl Http {
    pub fn new(base: &str) -> Result<Http> {
        let Some(rest) = base.trim().strip_prefix("http://") else {
            bail!("`{base}` is not an `http://` address: the smoke test talks plain HTTP to the app (for an app behind TLS, point it at the app's own port)");
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            bail!("`{base}` must be `http://HOST:PORT`, without a path");
        }
        Ok(Http {
            authority: authority.to_string(),
            timeout: Duration::from_secs(15),
        })
    }

    /// `http://HOST:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.authority)
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Http {
        self.timeout = timeout;
        self
    }

    /// Sends one request with these extra headers and body; returns whatever status came back.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let what = format!("{method} {path}");
        let address = self
            .authority
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve `{}`", self.authority))?
            .next()
            .with_context(|| format!("`{}` resolves to no address", self.authority))?;
        let mut stream = TcpStream::connect_timeout(&address, self.timeout)
            .with_context(|| format!("{what}: cannot connect to `{}`", self.authority))?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: cargo-xtask-smoke\r\n",
            self.authority
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        if let Some(body) = body {
            bytes.extend_from_slice(body);
        }
        stream
            .write_all(&bytes)
            .with_context(|| format!("{what}: cannot send the request"))?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).with_context(|| {
            format!(
                "{what}: no complete answer within {} s",
                self.timeout.as_secs()
            )
        })?;
        parse_response(&raw).with_context(|| format!("{what}: the answer is not HTTP/1.1"))
    }

    pub fn get(&self, path: &str, cookie: Option<&str>) -> Result<Response> {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        self.request("GET", path, &headers, None)
    }

    /// A form post, `application/x-www-form-urlencoded`, as a browser sends it.
    pub fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> Result<Response> {
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(cookie) = cookie {
            headers.push(("Cookie", cookie));
        }
        let body = form_urlencode(form);
        self.request("POST", path, &headers, Some(body.as_bytes()))
    }
}

/// `a=1&b=x%20y`: the body of a form post.
pub(crate) fn form_urlencode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{}={}", percent_encode(key), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The value of the form's hidden `csrf` field on a page.
pub fn csrf_of(body: &str) -> Result<String> {
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker).context("no CSRF token on the page")? + marker.len();
    let end = body[start..]
        .find('"')
        .context("the page's CSRF token is not terminated")?;
    Ok(body[start..start + end].to_string())
}

fn parse_response(raw: &[u8]) -> Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("bad status line `{status_line}`"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size line is not terminated")?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size `{size_text}`"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        anyhow::ensure!(data.len() >= size + 2, "a chunk is cut short");
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded_as_browsers_do() {
        assert_eq!(
            form_urlencode(&[("email", "a+b@x.test"), ("message", "héllo & <bye>")]),
            "email=a%2Bb%40x.test&message=h%C3%A9llo+%26+%3Cbye%3E"
        );
    }

    #[test]
    fn responses_with_and_without_chunks() {
        let plain = parse_response(
            b"HTTP/1.1 303 See Other\r\nLocation: /data\r\nSet-Cookie: datahub_session=abc; HttpOnly\r\nContent-Length: 2\r\n\r\nok",
        )
        .unwrap();
        assert_eq!(plain.status, 303);
        assert_eq!(plain.location(), "/data");
        assert_eq!(
            plain.cookie("datahub_session").as_deref(),
            Some("datahub_session=abc")
        );
        assert_eq!(plain.body, "ok");
        let chunked = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.body, "abcde");
    }

    #[test]
    fn only_plain_http_addresses() {
        assert!(Http::new("http://127.0.0.1:8080/").is_ok());
        assert!(Http::new("https://example.com").is_err());
        assert!(Http::new("http://127.0.0.1:8080/data").is_err());
    }
}
