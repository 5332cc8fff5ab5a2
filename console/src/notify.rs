//! Notifiers: a structured log line per alert, and webhooks with a durable outbox.
//!
//! Each notification is written to the sled tree `outbox` once per webhook, keyed by
//! webhook index and a sequence number, before anything is sent; one delivery task per
//! webhook sends its entries strictly in sequence order (so per host in order too), retries
//! the head with exponential backoff (1 s doubling to 30 s), removes an entry only after a
//! 2xx answer, and gives an entry up (counted, logged) once it is older than
//! `webhook_max_age`. A console restart resumes from the outbox. Delivery never runs on the
//! ingest thread. Receivers can deduplicate on `X-EdgeFleet-Delivery`; a crash between the
//! 2xx and the removal sends that one entry again.
//!
//! Every POST carries `X-EdgeFleet-Signature: sha256=<hex HMAC-SHA256(secret, body)>` when
//! the webhook has a secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edgefleet_codec::api::{AgentSummary, AlertState, AlertView};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// The JSON body of a webhook POST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `alert.fired` or `alert.resolved`.
    pub event: String,
    pub alert: AlertView,
    /// The host as the API shows it at the time of the event.
    pub host: Option<AgentSummary>,
    pub created_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    created_at: u64,
    body: String,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: Option<String>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct NotifyStats {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub given_up: AtomicU64,
}

#[derive(Debug)]
pub struct Notifier {
    outbox: sled::Tree,
    hooks: Vec<Webhook>,
    max_age_ms: u64,
    wake: Vec<Notify>,
    next_seq: AtomicU64,
    pub stats: NotifyStats,
}

fn key(hook: usize, seq: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(&(hook as u16).to_be_bytes());
    k[2..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl Notifier {
    pub fn new(outbox: sled::Tree, hooks: Vec<Webhook>, max_age: Duration) -> Notifier {
        let wake = hooks.iter().map(|_| Notify::new()).collect();
        // Sequence numbers continue after the highest one still in the outbox.
        let last = outbox
            .iter()
            .keys()
            .filter_map(Result::ok)
            .filter_map(|k| <[u8; 8]>::try_from(k.get(2..10)?).ok())
            .map(u64::from_be_bytes)
            .max()
            .unwrap_or(0);
        Notifier {
            next_seq: AtomicU64::new(last.max(crate::fleet::now_ms() * 1000) + 1),
            outbox,
            hooks,
            max_age_ms: max_age.as_millis() as u64,
            wake,
            stats: NotifyStats::default(),
        }
    }

    /// Logs the alert and queues it for every webhook (durably) unless it is silenced.
    pub fn alert(
        &self,
        alert: &AlertView,
        host: Option<AgentSummary>,
        now: u64,
    ) -> Result<(), StoreError> {
        let event = match alert.state {
            AlertState::Firing => "alert.fired",
            AlertState::Resolved => "alert.resolved",
        };
        match alert.state {
            AlertState::Firing => {
                tracing::warn!(alert.id = alert.id, alert.rule = %alert.rule, agent.id = %alert.agent, hostname = ?alert.hostname, cause = %alert.cause, silenced = alert.silenced, "alert fired")
            }
            AlertState::Resolved => {
                tracing::info!(alert.id = alert.id, alert.rule = %alert.rule, agent.id = %alert.agent, silenced = alert.silenced, "alert resolved")
            }
        }
        if alert.silenced || self.hooks.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_string(&Notification {
            event: event.to_string(),
            alert: alert.clone(),
            host,
            created_at: now,
        })
        .expect("notifications serialize");
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut batch = sled::Batch::default();
        for i in 0..self.hooks.len() {
            let entry = Entry {
                seq,
                created_at: now,
                body: body.clone(),
            };
            batch.insert(
                &key(i, seq),
                serde_json::to_vec(&entry).expect("serializes"),
            );
        }
        self.outbox.apply_batch(batch)?;
        self.outbox.flush()?;
        for w in &self.wake {
            w.notify_one();
        }
        Ok(())
    }

    /// Entries waiting, over all webhooks.
    pub fn backlog(&self) -> usize {
        self.outbox.len()
    }

    /// Runs one delivery loop per webhook until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tasks: Vec<_> = (0..self.hooks.len())
            .map(|i| tokio::spawn(self.clone().deliver(i, shutdown.clone())))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn deliver(self: Arc<Self>, hook: usize, shutdown: CancellationToken) {
        let prefix = (hook as u16).to_be_bytes();
        let mut backoff = Duration::from_secs(1);
        loop {
            let head = self.outbox.scan_prefix(prefix).next();
            let (k, entry) = match head {
                Some(Ok((k, v))) => match serde_json::from_slice::<Entry>(&v) {
                    Ok(e) => (k, e),
                    Err(e) => {
                        tracing::error!(error = %e, "dropping a corrupt webhook outbox entry");
                        let _ = self.outbox.remove(k);
                        continue;
                    }
                },
                Some(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the webhook outbox");
                    if wait(&shutdown, Duration::from_secs(5)).await {
                        return;
                    }
                    continue;
                }
                None => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.wake[hook].notified() => continue,
                        // A wake-up lost in a race costs at most this long.
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    }
                }
            };
            let hooked = &self.hooks[hook];
            let result = post(hooked, &entry).await;
            match result {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.outbox.remove(&k).and_then(|_| self.outbox.flush()) {
                        tracing::error!(error = %e, "cannot remove a delivered webhook entry; it may be sent again");
                    }
                    backoff = Duration::from_secs(1);
                }
                Err(error) => {
                    self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    let age = crate::fleet::now_ms().saturating_sub(entry.created_at);
                    if age > self.max_age_ms {
                        self.stats.given_up.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(url = %hooked.url, delivery = entry.seq, %error, age_s = age / 1000, "giving up a webhook notification");
                        let _ = self.outbox.remove(&k);
                        continue;
                    }
                    tracing::warn!(url = %hooked.url, delivery = entry.seq, %error, retry_in_s = backoff.as_secs(), "webhook delivery failed");
                    if wait(&shutdown, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Sleeps `d`; true if shut down meanwhile.
async fn wait(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// The signature header value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// One HTTP/1.1 POST, plain or TLS (system CA bundle), 10 s overall; `Ok` on a 2xx.
async fn post(hook: &Webhook, entry: &Entry) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(10), post_inner(hook, entry))
        .await
        .map_err(|_| "timed out after 10 s".to_string())?
}

async fn post_inner(hook: &Webhook, entry: &Entry) -> Result<(), String> {
    let url = url::Url::parse(&hook.url).map_err(|e| format!("bad URL: {e}"))?;
    let host = url.host_str().ok_or("URL without host")?.to_string();
    let port = url.port_or_known_default().ok_or("URL without port")?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: edgefleet-console\r\nX-EdgeFleet-Delivery: {}\r\nConnection: close\r\n",
        entry.body.len(),
        entry.seq
    );
    if let Some(secret) = &hook.secret {
        head.push_str(&format!(
            "X-EdgeFleet-Signature: {}\r\n",
            signature(secret, entry.body.as_bytes())
        ));
    }
    head.push_str("\r\n");
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let mut answer = Vec::new();
    if url.scheme() == "https" {
        let connector = tokio_rustls::TlsConnector::from(client_tls()?);
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("server name {host:?}: {e}"))?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(&mut tls, &head, &entry.body, &mut answer).await?;
    } else {
        let mut tcp = tcp;
        exchange(&mut tcp, &head, &entry.body, &mut answer).await?;
    }
    let status_line = String::from_utf8_lossy(&answer[..answer.len().min(64)]).to_string();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {status_line:?}"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    head: &str,
    body: &str,
    answer: &mut Vec<u8>,
) -> Result<(), String> {
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(body.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    // The status line is all we need; stop reading after a few KiB.
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.len() >= 4096 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) if !answer.is_empty() => {
                tracing::debug!(error = %e, "webhook receiver closed uncleanly after answering");
                break;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The system roots, read once: every retry of every webhook would otherwise re-read the
/// CA bundle.
fn client_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| load_client_tls().map(Arc::new))
        .clone()
}

fn load_client_tls() -> Result<rustls::ClientConfig, String> {
    let path = "/etc/ssl/certs/ca-certificates.crt";
    let file = std::fs::File::open(path).map_err(|e| format!("reading {path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(file)).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
