//! Console configuration: `/etc/edgefleet-console/console.toml` plus `EDGEFLEET_CONSOLE_*`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::{
    self, check_range, check_topic_prefix, ConfigError, KeyDoc, Provenance, ValueKind, REDACTED,
};
use crate::HumanDuration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    pub presence: PresenceConfig,
    pub retention: RetentionConfig,
    pub alerts: AlertsConfig,
    pub store: StoreConfig,
}

/// `[store]`: the console's sled database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Free space (MiB) kept on the data dir's filesystem: below it the console refuses
    /// writes, so sled never reaches a full disk. 0 turns the guard off.
    pub min_free_mb: u64,
}

/// `[alerts]`: the built-in alert rules and the notifiers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// An agent offline for less than this (a reconnect within grace) raises no alert.
    pub offline_grace: HumanDuration,
    /// Whether a graceful stop (cause `clean`) raises an offline alert.
    pub notify_on_clean_stop: bool,
    /// More than this many offline transitions within `flap_window` is flapping.
    pub flap_count: u32,
    pub flap_window: HumanDuration,
    /// cpu, mem or disk at or above this percentage ...
    pub hotspot_threshold: u8,
    /// ... for this long raises a hotspot alert.
    pub hotspot_window: HumanDuration,
    /// A webhook delivery still failing after this long is given up (and counted).
    pub webhook_max_age: HumanDuration,
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Plain listener of the embedded broker.
    pub bind: SocketAddr,
    pub tls_bind: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `mqtt(s)://host:port` of an external broker, instead of the embedded one.
    pub external: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub max_payload: usize,
    pub max_connections: usize,
    /// New connections one peer address (IPv4, or IPv6 /64) may open at once; 0 turns the
    /// per-address limit of the embedded broker off.
    pub connect_burst_per_ip: u32,
    /// New connections per second one peer address may open after its burst.
    pub connects_per_ip_per_s: u32,
    pub topic_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// The heartbeat interval agents are expected to use when their birth does not say.
    pub heartbeat_interval: HumanDuration,
    /// How many missed intervals make an agent offline (with `grace` on top).
    pub missed_intervals: u32,
    pub grace: HumanDuration,
    /// After a console start, how long agents get to re-birth before anyone times out.
    pub restart_grace: HumanDuration,
    pub stale_after: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub raw: HumanDuration,
    pub rollup_1m: HumanDuration,
    pub rollup_15m: HumanDuration,
    /// Agent events, command results and status changes.
    pub history: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            data_dir: PathBuf::from("/var/lib/edgefleet-console"),
            http: HttpConfig::default(),
            mqtt: MqttConfig::default(),
            presence: PresenceConfig::default(),
            retention: RetentionConfig::default(),
            alerts: AlertsConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { min_free_mb: 64 }
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            offline_grace: HumanDuration::secs(10),
            notify_on_clean_stop: false,
            flap_count: 3,
            flap_window: HumanDuration::secs(600),
            hotspot_threshold: 80,
            hotspot_window: HumanDuration::secs(300),
            webhook_max_age: HumanDuration::secs(24 * 3600),
            webhooks: Vec::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 1883)),
            tls_bind: None,
            tls_cert: None,
            tls_key: None,
            external: None,
            username: None,
            password: None,
            ca_file: None,
            max_payload: 64 * 1024,
            max_connections: 10_000,
            // A site's whole fleet behind one NAT address reconnecting at once (with the
            // agents' jittered backoff) stays far under these; one host flooding does not.
            connect_burst_per_ip: 1_000,
            connects_per_ip_per_s: 100,
            topic_prefix: "ef".to_string(),
        }
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            heartbeat_interval: HumanDuration::secs(30),
            missed_intervals: 2,
            grace: HumanDuration::secs(5),
            restart_grace: HumanDuration::secs(60),
            stale_after: HumanDuration::secs(15 * 60),
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            raw: HumanDuration::secs(24 * 3600),
            rollup_1m: HumanDuration::secs(7 * 86400),
            rollup_15m: HumanDuration::secs(30 * 86400),
            history: HumanDuration::secs(90 * 86400),
        }
    }
}

/// 1 TiB: a larger reserve is a typo, not a plan.
const MAX_MIN_FREE_MB: u64 = 1024 * 1024;

macro_rules! key {
    ($key:literal, $env:literal, $kind:ident, $default:literal, $meaning:literal) => {
        KeyDoc {
            key: $key,
            env: $env,
            kind: ValueKind::$kind,
            default: $default,
            meaning: $meaning,
        }
    };
}

/// Every console key with its environment variable, default and meaning.
pub const KEYS: &[KeyDoc] = &[
    key!("data_dir", "EDGEFLEET_CONSOLE_DATA_DIR", Text, "/var/lib/edgefleet-console", "Console key, sled database, artifacts."),
    key!("http.bind", "EDGEFLEET_CONSOLE_HTTP_BIND", Text, "127.0.0.1:8080", "REST API and web UI listener."),
    key!("http.tls_cert", "EDGEFLEET_CONSOLE_HTTP_TLS_CERT", Text, "(none)", "PEM certificate for HTTPS; set with `http.tls_key`."),
    key!("http.tls_key", "EDGEFLEET_CONSOLE_HTTP_TLS_KEY", Text, "(none)", "PEM private key for HTTPS."),
    key!("mqtt.bind", "EDGEFLEET_CONSOLE_MQTT_BIND", Text, "0.0.0.0:1883", "Plain MQTT listener of the embedded broker."),
    key!("mqtt.tls_bind", "EDGEFLEET_CONSOLE_MQTT_TLS_BIND", Text, "(none)", "MQTT over TLS listener of the embedded broker; needs `mqtt.tls_cert` and `mqtt.tls_key`."),
    key!("mqtt.tls_cert", "EDGEFLEET_CONSOLE_MQTT_TLS_CERT", Text, "(none)", "PEM certificate for the MQTT TLS listener."),
    key!("mqtt.tls_key", "EDGEFLEET_CONSOLE_MQTT_TLS_KEY", Text, "(none)", "PEM private key for the MQTT TLS listener."),
    key!("mqtt.external", "EDGEFLEET_CONSOLE_MQTT_EXTERNAL", Text, "(none)", "`mqtt(s)://host:port` of an external broker; replaces the embedded one (then `mqtt.bind`/`mqtt.tls_*` must not be set)."),
    key!("mqtt.username", "EDGEFLEET_CONSOLE_MQTT_USERNAME", Text, "(none)", "Username for the external broker."),
    key!("mqtt.password", "EDGEFLEET_CONSOLE_MQTT_PASSWORD", Text, "(none)", "Password for the external broker (secret)."),
    key!("mqtt.ca_file", "EDGEFLEET_CONSOLE_MQTT_CA_FILE", Text, "(system roots)", "CA for the external broker's TLS certificate."),
    key!("mqtt.max_payload", "EDGEFLEET_CONSOLE_MQTT_MAX_PAYLOAD", Int, "65536", "Largest MQTT payload accepted, bytes (1 KiB to 1 MiB)."),
    key!("mqtt.max_connections", "EDGEFLEET_CONSOLE_MQTT_MAX_CONNECTIONS", Int, "10000", "Connection limit of the embedded broker (1 to 100000)."),
    key!("mqtt.connect_burst_per_ip", "EDGEFLEET_CONSOLE_MQTT_CONNECT_BURST_PER_IP", Int, "1000", "New connections one address (IPv4, IPv6 /64) may open at once before `mqtt.connects_per_ip_per_s` applies; over it the embedded broker closes the socket at once. 0 turns the limit off."),
    key!("mqtt.connects_per_ip_per_s", "EDGEFLEET_CONSOLE_MQTT_CONNECTS_PER_IP_PER_S", Int, "100", "New connections per second one address may open after its burst (1 to 100000)."),
    key!("mqtt.topic_prefix", "EDGEFLEET_CONSOLE_MQTT_TOPIC_PREFIX", Text, "ef", "MQTT topic prefix; must match the agents'."),
    key!("presence.heartbeat_interval", "EDGEFLEET_CONSOLE_PRESENCE_HEARTBEAT_INTERVAL", Text, "30s", "Expected agent heartbeat interval when a birth does not say."),
    key!("presence.missed_intervals", "EDGEFLEET_CONSOLE_PRESENCE_MISSED_INTERVALS", Int, "2", "Missed heartbeat intervals (plus `presence.grace`) before an agent is offline by timeout."),
    key!("presence.grace", "EDGEFLEET_CONSOLE_PRESENCE_GRACE", Text, "5s", "Extra time on top of the missed intervals."),
    key!("presence.restart_grace", "EDGEFLEET_CONSOLE_PRESENCE_RESTART_GRACE", Text, "60s", "After a console start, time agents get to re-birth before anyone times out."),
    key!("presence.stale_after", "EDGEFLEET_CONSOLE_PRESENCE_STALE_AFTER", Text, "15m", "No heartbeat for this long flags an agent stale."),
    key!("retention.raw", "EDGEFLEET_CONSOLE_RETENTION_RAW", Text, "24h", "How long raw metric samples are kept."),
    key!("retention.rollup_1m", "EDGEFLEET_CONSOLE_RETENTION_ROLLUP_1M", Text, "7d", "How long 1-minute rollups are kept (at least `retention.raw`)."),
    key!("retention.rollup_15m", "EDGEFLEET_CONSOLE_RETENTION_ROLLUP_15M", Text, "30d", "How long 15-minute rollups are kept (at least `retention.rollup_1m`)."),
    key!("retention.history", "EDGEFLEET_CONSOLE_RETENTION_HISTORY", Text, "90d", "How long agent events, command results and status changes are kept (10m to 3650d). The audit trail is never expired."),
    key!("store.min_free_mb", "EDGEFLEET_CONSOLE_STORE_MIN_FREE_MB", Int, "64", "Free space (MiB) kept on the data dir's filesystem: below it writes are refused (API 507, `/healthz` degraded) until it is back above this plus a quarter (at least 1 MiB more); 0 turns the guard off (0 to 1048576)."),
    key!("alerts.offline_grace", "EDGEFLEET_CONSOLE_ALERTS_OFFLINE_GRACE", Text, "10s", "An agent back within this time after going offline raises no alert (0s to 1h)."),
    key!("alerts.notify_on_clean_stop", "EDGEFLEET_CONSOLE_ALERTS_NOTIFY_ON_CLEAN_STOP", Bool, "false", "Whether a graceful agent stop raises an offline alert."),
    key!("alerts.flap_count", "EDGEFLEET_CONSOLE_ALERTS_FLAP_COUNT", Int, "3", "More offline transitions than this within `alerts.flap_window` is flapping (1 to 100)."),
    key!("alerts.flap_window", "EDGEFLEET_CONSOLE_ALERTS_FLAP_WINDOW", Text, "10m", "Window for flapping; a flapping alert resolves after this long without an offline transition."),
    key!("alerts.hotspot_threshold", "EDGEFLEET_CONSOLE_ALERTS_HOTSPOT_THRESHOLD", Int, "80", "cpu, mem or disk percentage that counts as hot (1 to 100)."),
    key!("alerts.hotspot_window", "EDGEFLEET_CONSOLE_ALERTS_HOTSPOT_WINDOW", Text, "5m", "How long a metric must stay hot before a hotspot alert fires."),
    key!("alerts.webhook_max_age", "EDGEFLEET_CONSOLE_ALERTS_WEBHOOK_MAX_AGE", Text, "24h", "A webhook notification still undelivered after this long is given up and counted."),
    key!("alerts.webhooks", "EDGEFLEET_CONSOLE_ALERTS_WEBHOOKS", Text, "(none)", "`[[alerts.webhooks]]` entries with `url` and `secret` (HMAC-SHA256 key for `X-EdgeFleet-Signature`); file only, the variable is reserved."),
];

impl ConsoleConfig {
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ConsoleConfig, ConfigError> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k != "EDGEFLEET_CONSOLE_ALERTS_WEBHOOKS")
            .collect();
        let (config, prov): (ConsoleConfig, Provenance) =
            source::load(path, env, "EDGEFLEET_CONSOLE_", KEYS)?;
        config.validate(&prov)?;
        Ok(config)
    }

    pub fn load_from_process_env(path: Option<&Path>) -> Result<ConsoleConfig, ConfigError> {
        ConsoleConfig::load(path, std::env::vars())
    }

    fn validate(&self, prov: &Provenance) -> Result<(), ConfigError> {
        let both = |a: bool, b: bool, key: &str, other: &str| {
            if a != b {
                Err(prov.invalid(key, format!("must be set together with {other}")))
            } else {
                Ok(())
            }
        };
        both(
            self.http.tls_cert.is_some(),
            self.http.tls_key.is_some(),
            "http.tls_cert",
            "http.tls_key",
        )?;
        both(
            self.mqtt.tls_cert.is_some(),
            self.mqtt.tls_key.is_some(),
            "mqtt.tls_cert",
            "mqtt.tls_key",
        )?;
        both(
            self.mqtt.tls_bind.is_some(),
            self.mqtt.tls_cert.is_some(),
            "mqtt.tls_bind",
            "mqtt.tls_cert and mqtt.tls_key",
        )?;
        if let Some(external) = &self.mqtt.external {
            let ok = url::Url::parse(external)
                .map(|u| {
                    matches!(u.scheme(), "mqtt" | "mqtts")
                        && u.host_str().is_some_and(|h| !h.is_empty())
                })
                .unwrap_or(false);
            if !ok {
                return Err(prov.invalid(
                    "mqtt.external",
                    format!("must be an mqtt:// or mqtts:// URL with a host (got {external:?})"),
                ));
            }
            for key in [
                "mqtt.bind",
                "mqtt.tls_bind",
                "mqtt.tls_cert",
                "mqtt.tls_key",
            ] {
                if prov.is_set(key) {
                    return Err(prov.invalid(key, "cannot be used with mqtt.external: the embedded broker is off when an external broker is configured"));
                }
            }
        }
        if !(1024..=1024 * 1024).contains(&self.mqtt.max_payload) {
            return Err(prov.invalid(
                "mqtt.max_payload",
                format!(
                    "must be between 1024 and 1048576 (got {})",
                    self.mqtt.max_payload
                ),
            ));
        }
        if !(1..=100_000).contains(&self.mqtt.max_connections) {
            return Err(prov.invalid(
                "mqtt.max_connections",
                format!(
                    "must be between 1 and 100000 (got {})",
                    self.mqtt.max_connections
                ),
            ));
        }
        if self.mqtt.connect_burst_per_ip > 1_000_000 {
            return Err(prov.invalid(
                "mqtt.connect_burst_per_ip",
                format!(
                    "must be between 0 (off) and 1000000 (got {})",
                    self.mqtt.connect_burst_per_ip
                ),
            ));
        }
        if !(1..=100_000).contains(&self.mqtt.connects_per_ip_per_s) {
            return Err(prov.invalid(
                "mqtt.connects_per_ip_per_s",
                format!(
                    "must be between 1 and 100000 (got {})",
                    self.mqtt.connects_per_ip_per_s
                ),
            ));
        }
        check_topic_prefix(prov, "mqtt.topic_prefix", &self.mqtt.topic_prefix)?;
        let p = &self.presence;
        check_range(
            prov,
            "presence.heartbeat_interval",
            p.heartbeat_interval,
            HumanDuration::secs(1),
            HumanDuration::secs(3600),
        )?;
        if !(1..=100).contains(&p.missed_intervals) {
            return Err(prov.invalid(
                "presence.missed_intervals",
                format!("must be between 1 and 100 (got {})", p.missed_intervals),
            ));
        }
        check_range(
            prov,
            "presence.grace",
            p.grace,
            HumanDuration::secs(0),
            HumanDuration::secs(3600),
        )?;
        check_range(
            prov,
            "presence.restart_grace",
            p.restart_grace,
            HumanDuration::secs(0),
            HumanDuration::secs(3600),
        )?;
        check_range(
            prov,
            "presence.stale_after",
            p.stale_after,
            HumanDuration::secs(10),
            HumanDuration::secs(7 * 86400),
        )?;
        let r = &self.retention;
        check_range(
            prov,
            "retention.raw",
            r.raw,
            HumanDuration::secs(600),
            HumanDuration::secs(90 * 86400),
        )?;
        check_range(
            prov,
            "retention.rollup_1m",
            r.rollup_1m,
            r.raw,
            HumanDuration::secs(365 * 86400),
        )?;
        check_range(
            prov,
            "retention.rollup_15m",
            r.rollup_15m,
            r.rollup_1m,
            HumanDuration::secs(5 * 365 * 86400),
        )?;
        check_range(
            prov,
            "retention.history",
            r.history,
            HumanDuration::secs(600),
            HumanDuration::secs(3650 * 86400),
        )?;
        if self.store.min_free_mb > MAX_MIN_FREE_MB {
            return Err(prov.invalid(
                "store.min_free_mb",
                format!(
                    "must be between 0 and {MAX_MIN_FREE_MB} (got {})",
                    self.store.min_free_mb
                ),
            ));
        }
        let a = &self.alerts;
        check_range(
            prov,
            "alerts.offline_grace",
            a.offline_grace,
            HumanDuration::secs(0),
            HumanDuration::secs(3600),
        )?;
        if !(1..=100).contains(&a.flap_count) {
            return Err(prov.invalid(
                "alerts.flap_count",
                format!("must be between 1 and 100 (got {})", a.flap_count),
            ));
        }
        check_range(
            prov,
            "alerts.flap_window",
            a.flap_window,
            HumanDuration::secs(10),
            HumanDuration::secs(86400),
        )?;
        if !(1..=100).contains(&a.hotspot_threshold) {
            return Err(prov.invalid(
                "alerts.hotspot_threshold",
                format!("must be between 1 and 100 (got {})", a.hotspot_threshold),
            ));
        }
        check_range(
            prov,
            "alerts.hotspot_window",
            a.hotspot_window,
            HumanDuration::secs(0),
            HumanDuration::secs(86400),
        )?;
        check_range(
            prov,
            "alerts.webhook_max_age",
            a.webhook_max_age,
            HumanDuration::secs(60),
            HumanDuration::secs(30 * 86400),
        )?;
        for (i, hook) in self.alerts.webhooks.iter().enumerate() {
            let ok = url::Url::parse(&hook.url)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false);
            if !ok {
                return Err(ConfigError::Invalid {
                    key: format!("alerts.webhooks[{i}].url"),
                    message: format!("must be an http:// or https:// URL (got {:?})", hook.url),
                    origin: prov.origin("alerts.webhooks"),
                });
            }
        }
        Ok(())
    }

    /// How long without a heartbeat before an agent with `interval` is offline by timeout.
    pub fn offline_after(&self, interval: std::time::Duration) -> std::time::Duration {
        interval * self.presence.missed_intervals + self.presence.grace.get()
    }

    /// The effective config as TOML, with secrets redacted.
    pub fn show(&self) -> String {
        let mut shown = self.clone();
        if shown.mqtt.password.is_some() {
            shown.mqtt.password = Some(REDACTED.to_string());
        }
        for hook in &mut shown.alerts.webhooks {
            if hook.secret.is_some() {
                hook.secret = Some(REDACTED.to_string());
            }
        }
        source::render(&shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn defaults_are_safe() {
        let c = ConsoleConfig::load(None, env(&[])).unwrap();
        assert_eq!(c.http.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.mqtt.bind.to_string(), "0.0.0.0:1883");
        assert_eq!(
            c.offline_after(std::time::Duration::from_secs(30))
                .as_secs(),
            65
        );
    }

    #[test]
    fn external_broker_excludes_the_embedded_listener() {
        let (_d, path) =
            file("[mqtt]\nexternal = \"mqtt://broker:1883\"\nbind = \"0.0.0.0:1884\"\n");
        let err = ConsoleConfig::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("mqtt.bind: cannot be used with mqtt.external: the embedded broker is off when an external broker is configured in {}", path.display()));
        let (_d, path) = file("[mqtt]\nexternal = \"mqtt://broker:1883\"\n");
        assert!(ConsoleConfig::load(Some(&path), env(&[])).is_ok());
        let err = ConsoleConfig::load(
            Some(&path),
            env(&[("EDGEFLEET_CONSOLE_MQTT_TLS_BIND", "0.0.0.0:8883")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("mqtt.tls_bind: "), "{err}");
    }

    #[test]
    fn tls_files_come_in_pairs_and_retention_is_ordered() {
        let err = ConsoleConfig::load(None, env(&[("EDGEFLEET_CONSOLE_HTTP_TLS_CERT", "/c.pem")]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "http.tls_cert: must be set together with http.tls_key (from EDGEFLEET_CONSOLE_HTTP_TLS_CERT)");
        let err = ConsoleConfig::load(
            None,
            env(&[("EDGEFLEET_CONSOLE_RETENTION_ROLLUP_1M", "1h")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "retention.rollup_1m: must be between 1d and 365d (got \"1h\") (from EDGEFLEET_CONSOLE_RETENTION_ROLLUP_1M)");
    }

    #[test]
    fn env_overrides_nested_keys() {
        let (_d, path) = file("[presence]\nrestart_grace = \"10s\"\n");
        let c = ConsoleConfig::load(
            Some(&path),
            env(&[
                ("EDGEFLEET_CONSOLE_PRESENCE_RESTART_GRACE", "3s"),
                ("EDGEFLEET_CONSOLE_HTTP_BIND", "127.0.0.1:9"),
                ("EDGEFLEET_CONSOLE_STORE_MIN_FREE_MB", "4"),
            ]),
        )
        .unwrap();
        assert_eq!(c.presence.restart_grace.get().as_secs(), 3);
        assert_eq!(c.store.min_free_mb, 4);
        assert_eq!(c.http.bind.port(), 9);
        let err = ConsoleConfig::load(None, env(&[("EDGEFLEET_CONSOLE_HTTP_BIND", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("EDGEFLEET_CONSOLE_HTTP_BIND: "), "{err}");
    }

    #[test]
    fn show_redacts_passwords_and_webhook_secrets() {
        let (_d, path) = file("[mqtt]\nexternal = \"mqtts://b\"\npassword = \"hunter2\"\n\n[[alerts.webhooks]]\nurl = \"https://hooks.example/x\"\nsecret = \"s3cret\"\n");
        let shown = ConsoleConfig::load(Some(&path), env(&[])).unwrap().show();
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(shown.matches("<redacted>").count(), 2, "{shown}");
    }

    /// Every validated console key, one bad value each: the error starts with the key
    /// and names the file it came from.
    #[test]
    fn every_validated_key_names_itself_in_the_error() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[http]\ntls_cert = \"/c.pem\"",
                "http.tls_cert",
                "together with http.tls_key",
            ),
            (
                "[mqtt]\ntls_key = \"/k.pem\"",
                "mqtt.tls_cert",
                "together with mqtt.tls_key",
            ),
            (
                "[mqtt]\ntls_bind = \"0.0.0.0:8883\"",
                "mqtt.tls_bind",
                "together with",
            ),
            (
                "[mqtt]\nexternal = \"http://x\"",
                "mqtt.external",
                "mqtt:// or mqtts://",
            ),
            (
                "[mqtt]\nexternal = \"mqtt://x\"\nbind = \"0.0.0.0:1883\"",
                "mqtt.bind",
                "cannot be used with mqtt.external",
            ),
            (
                "[mqtt]\nmax_payload = 100",
                "mqtt.max_payload",
                "between 1024 and 1048576 (got 100)",
            ),
            (
                "[mqtt]\nmax_payload = 2000000",
                "mqtt.max_payload",
                "between 1024 and 1048576 (got 2000000)",
            ),
            (
                "[mqtt]\nmax_connections = 0",
                "mqtt.max_connections",
                "between 1 and 100000",
            ),
            (
                "[mqtt]\nconnects_per_ip_per_s = 0",
                "mqtt.connects_per_ip_per_s",
                "between 1 and 100000 (got 0)",
            ),
            (
                "[mqtt]\nconnect_burst_per_ip = 2000000",
                "mqtt.connect_burst_per_ip",
                "between 0 (off) and 1000000",
            ),
            ("[mqtt]\ntopic_prefix = \"$SYS\"", "mqtt.topic_prefix", ""),
            (
                "[presence]\nheartbeat_interval = \"0s\"",
                "presence.heartbeat_interval",
                "between 1s and 1h",
            ),
            (
                "[presence]\nmissed_intervals = 0",
                "presence.missed_intervals",
                "between 1 and 100",
            ),
            ("[presence]\ngrace = \"2h\"", "presence.grace", ""),
            (
                "[presence]\nrestart_grace = \"2h\"",
                "presence.restart_grace",
                "",
            ),
            (
                "[presence]\nstale_after = \"1s\"",
                "presence.stale_after",
                "",
            ),
            ("[retention]\nraw = \"1m\"", "retention.raw", ""),
            (
                "[retention]\nraw = \"2d\"\nrollup_1m = \"1d\"",
                "retention.rollup_1m",
                "",
            ),
            (
                "[retention]\nrollup_15m = \"1h\"",
                "retention.rollup_15m",
                "",
            ),
            (
                "[retention]\nhistory = \"1m\"",
                "retention.history",
                "between 10m and 3650d",
            ),
            (
                "[alerts]\noffline_grace = \"2h\"",
                "alerts.offline_grace",
                "",
            ),
            (
                "[alerts]\nflap_count = 0",
                "alerts.flap_count",
                "between 1 and 100",
            ),
            ("[alerts]\nflap_window = \"1s\"", "alerts.flap_window", ""),
            (
                "[alerts]\nhotspot_threshold = 101",
                "alerts.hotspot_threshold",
                "between 1 and 100",
            ),
            (
                "[alerts]\nhotspot_window = \"2d\"",
                "alerts.hotspot_window",
                "",
            ),
            (
                "[alerts]\nwebhook_max_age = \"1s\"",
                "alerts.webhook_max_age",
                "",
            ),
            (
                "[store]\nmin_free_mb = 2000000",
                "store.min_free_mb",
                "between 0 and 1048576 (got 2000000)",
            ),
            (
                "[[alerts.webhooks]]\nurl = \"ftp://x\"",
                "alerts.webhooks[0].url",
                "http:// or https://",
            ),
        ];
        for (toml, key, message) in cases {
            let (_d, path) = file(toml);
            let err = ConsoleConfig::load(Some(&path), env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("{key}: ")), "{toml:?}: {err}");
            assert!(err.contains(message), "{toml:?}: {err}");
            // A key required by another one was not set itself: its origin is the default.
            let origin = if ["mqtt.tls_cert"].contains(key) {
                "(default)".to_string()
            } else {
                path.display().to_string()
            };
            assert!(err.contains(&origin), "{toml:?}: {err}");
        }
    }
}
