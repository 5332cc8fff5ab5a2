//! The console's REST API over HTTP/1.1, plain or TLS (rustls), one `Connection: close`
//! request at a time. Failures become the operator-facing messages of the CLI spec: "Cannot
//! reach <url>", "Authentication failed", "Agent '<id>' not found", or the console's own
//! message for any other 4xx.

use std::io::{BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use edgefleet_codec::api::ApiErrorBody;

/// Where the console is and how to authenticate, resolved from flags, environment and the
/// login profile.
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://host:port` or `https://host:port`, as shown in messages.
    pub url: String,
    tls: bool,
    authority: String,
    key: String,
    ca_file: Option<PathBuf>,
}

impl Client {
    /// `console` is `host:port` (plain HTTP), `http://host:port` or `https://host:port`.
    pub fn new(console: &str, key: &str, ca_file: Option<&Path>) -> Result<Client> {
        let (tls, authority) = parse_console(console)?;
        Ok(Client {
            url: format!("{}://{authority}", if tls { "https" } else { "http" }),
            tls,
            authority,
            key: key.to_string(),
            ca_file: ca_file.map(Path::to_path_buf),
        })
    }

    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(path, "GET", None)
    }

    /// A request whose answer is JSON of type `T`.
    pub fn send<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        method: &str,
        body: Option<&str>,
    ) -> Result<T> {
        let answer = self.request(method, path, body.unwrap_or("").as_bytes())?;
        serde_json::from_str(&answer)
            .with_context(|| format!("unexpected answer from {}{path}", self.url))
    }

    /// One request; a non-2xx answer becomes an error with the operator-facing message.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<String> {
        let mut stream = self.open(Some(Duration::from_secs(120)))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.authority,
            self.key,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .with_context(|| format!("Cannot reach {}: sending the request failed", self.url))?;
        let mut raw = Vec::new();
        read_all(&mut stream, &mut raw)
            .with_context(|| format!("Cannot reach {}: no answer", self.url))?;
        let raw = String::from_utf8(raw).context("the console's answer is not UTF-8")?;
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .context("malformed HTTP answer")?;
        let status = status_of(head)?;
        let body = if is_chunked(head) {
            dechunk(body)?
        } else {
            body.to_string()
        };
        if !(200..300).contains(&status) {
            bail!(self.failure(status, path, &body));
        }
        Ok(body)
    }

    /// Opens `GET path` as a stream (server-sent events) and calls `on_data` with each
    /// event's `data:` payload until the console ends the stream.
    pub fn follow(&self, path: &str, mut on_data: impl FnMut(&str)) -> Result<()> {
        let mut stream = self.open(None)?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
            self.authority, self.key
        )
        .with_context(|| format!("Cannot reach {}: sending the request failed", self.url))?;
        let mut reader = std::io::BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let status = status_of(&head)?;
        let chunked = is_chunked(&head);
        if status != 200 {
            let mut body = String::new();
            let _ = reader.read_to_string(&mut body);
            let body = if chunked {
                dechunk(&body).unwrap_or(body)
            } else {
                body
            };
            bail!(self.failure(status, path, &body));
        }
        // Undo the chunked framing as it arrives, then split SSE events on blank lines.
        let mut line = String::new();
        let mut pending = String::new();
        let mut data = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if chunked {
                let size = usize::from_str_radix(line.trim(), 16).context("bad chunk size")?;
                if size == 0 {
                    return Ok(());
                }
                let mut buf = vec![0u8; size + 2];
                reader.read_exact(&mut buf)?;
                buf.truncate(size);
                pending.push_str(&String::from_utf8(buf).context("event stream is not UTF-8")?);
            } else {
                pending.push_str(&line);
            }
            while let Some(end) = pending.find('\n') {
                let l: String = pending.drain(..=end).collect();
                let l = l.trim_end_matches(['\r', '\n']);
                if let Some(d) = l.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                } else if l.is_empty() && !data.is_empty() {
                    on_data(&data);
                    data.clear();
                }
            }
        }
    }

    /// The message for a non-2xx answer, as the CLI spec words them.
    fn failure(&self, status: u16, path: &str, body: &str) -> String {
        let msg = serde_json::from_str::<ApiErrorBody>(body)
            .map(|e| e.error)
            .unwrap_or_else(|_| body.trim().to_string());
        let msg = if msg.is_empty() {
            format!("{}{path} (no message)", self.url)
        } else {
            msg
        };
        match status {
            401 | 403 => format!("Authentication failed ({status} from {}: {msg})", self.url),
            // The console says `no agent ID` or, for a malformed id, `no agent "ID": why`.
            404 => match msg.strip_prefix("no agent ") {
                Some(rest) => match rest.split_once(": ") {
                    Some((id, why)) => {
                        format!("Agent '{}' not found ({why})", id.trim_matches('"'))
                    }
                    None => format!("Agent '{}' not found", rest.trim_matches('"')),
                },
                None => format!("Not found: {msg}"),
            },
            _ => format!("console answered {status}: {msg}"),
        }
    }

    fn open(&self, read_timeout: Option<Duration>) -> Result<Box<dyn Conn>> {
        let addr = if self.authority.contains(':') {
            self.authority.clone()
        } else {
            format!("{}:{}", self.authority, if self.tls { 443 } else { 80 })
        };
        let tcp = connect(&addr).with_context(|| format!("Cannot reach {}", self.url))?;
        tcp.set_read_timeout(read_timeout)?;
        if !self.tls {
            return Ok(Box::new(tcp));
        }
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
        let conn = rustls::ClientConnection::new(Arc::new(self.tls_config()?), name)?;
        Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
    }

    /// Trusts `--ca-file`, or else the system CA bundle.
    fn tls_config(&self) -> Result<rustls::ClientConfig> {
        let path = self
            .ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
        let file = std::fs::File::open(&path).with_context(|| {
            format!(
                "opening the CA file {} (pass --ca-file with the CA that signs the console's certificate)",
                path.display()
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
            let cert = cert.with_context(|| format!("reading {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("a certificate in {} is not usable", path.display()))?;
        }
        if roots.is_empty() {
            bail!("{} holds no PEM certificate", path.display());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// A connection to the console, plain or TLS.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// `(tls, authority)` from `host:port`, `http://…` or `https://…`.
fn parse_console(console: &str) -> Result<(bool, String)> {
    let (tls, authority) = match console.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        Some((scheme, _)) => {
            bail!("console URL {console:?}: unsupported scheme {scheme:?} (use http or https)")
        }
        None => (false, console),
    };
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("console URL {console:?}: expected http(s)://host:port with no path");
    }
    Ok((tls, authority.to_string()))
}

/// Connects with a bounded wait, so an unroutable console fails in seconds, not minutes.
fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name resolves to no address",
        )
    }))
}

fn status_of(head: &str) -> Result<u16> {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status")
}

fn is_chunked(head: &str) -> bool {
    head.to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
}

/// Reads to the end; a TLS peer that closes without close_notify still gave a full answer
/// under `Connection: close`.
fn read_all(stream: &mut impl Read, raw: &mut Vec<u8>) -> Result<()> {
    match stream.read_to_end(raw) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(()),
        Err(e) => Err(e).context("reading the console's answer"),
    }
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunk header")?;
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("short chunk trailer")?;
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_urls_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_console("127.0.0.1:8080").unwrap(),
            (false, "127.0.0.1:8080".into())
        );
        assert_eq!(
            parse_console("https://c.example:8443/").unwrap(),
            (true, "c.example:8443".into())
        );
        assert!(parse_console("ftp://x").is_err());
        assert!(parse_console("http://x/api").is_err());
    }

    #[test]
    fn failures_use_the_operator_wording() {
        let c = Client::new("127.0.0.1:9", "k", None).unwrap();
        assert_eq!(
            c.failure(404, "/p", r#"{"error":"no agent abc"}"#),
            "Agent 'abc' not found"
        );
        assert_eq!(
            c.failure(404, "/p", r#"{"error":"no agent \"x\": ids are short"}"#),
            "Agent 'x' not found (ids are short)"
        );
        assert!(c
            .failure(401, "/p", r#"{"error":"unknown API key"}"#)
            .starts_with("Authentication failed"));
        assert!(c
            .failure(403, "/p", "")
            .starts_with("Authentication failed"));
        assert_eq!(
            c.failure(409, "/p", r#"{"error":"duplicate"}"#),
            "console answered 409: duplicate"
        );
    }
}
