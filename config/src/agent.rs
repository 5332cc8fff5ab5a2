//! Agent configuration: `/etc/edgefleet-agent/agent.toml` plus `EDGEFLEET_AGENT_*`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::{
    self, check_range, check_topic_prefix, ConfigError, KeyDoc, Provenance, ValueKind, REDACTED,
};
use crate::HumanDuration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`; tried in order.
    pub console_urls: Vec<String>,
    /// CA certificate (PEM) for `mqtts://`. The certificate is verified against the URL host.
    pub ca_file: Option<PathBuf>,
    /// Enrollment token (secret): lets a new agent enroll, and names the only console key
    /// it will pin.
    pub token: Option<String>,
    pub data_dir: PathBuf,
    pub heartbeat_interval: HumanDuration,
    /// While the console is unreachable, one full sample is queued this often.
    pub history_interval: HumanDuration,
    pub keepalive: HumanDuration,
    pub queue_cap_mb: u64,
    /// update-app: the largest artifact download, in MB.
    pub artifact_max_mb: u64,
    /// update-app: the largest total size of an artifact's files once unpacked, in MB.
    pub artifact_unpacked_max_mb: u64,
    pub inventory_interval: HumanDuration,
    pub allow_scripts: bool,
    /// File of SHA-256 hashes (hex, one per line) of the scripts `run-script` may run.
    pub script_allowlist: Option<PathBuf>,
    pub topic_prefix: String,
    pub disk_mounts: Vec<PathBuf>,
    pub labels: BTreeMap<String, String>,
    pub apps: Vec<AppConfig>,
}

/// A managed app: a systemd unit the agent reports on and acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: String,
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_format: Option<ConfigFormat>,
    /// The directory update-app replaces with the contents of the new version's archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigFormat {
    Json,
    Toml,
    Yaml,
    Env,
    Ini,
}

/// A parsed console URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            console_urls: Vec::new(),
            ca_file: None,
            token: None,
            data_dir: PathBuf::from("/var/lib/edgefleet-agent"),
            heartbeat_interval: HumanDuration::secs(30),
            history_interval: HumanDuration::secs(300),
            keepalive: HumanDuration::secs(150),
            queue_cap_mb: 16,
            artifact_max_mb: 512,
            artifact_unpacked_max_mb: 2048,
            inventory_interval: HumanDuration::secs(6 * 3600),
            allow_scripts: false,
            script_allowlist: None,
            topic_prefix: "ef".to_string(),
            disk_mounts: vec![PathBuf::from("/")],
            labels: BTreeMap::new(),
            apps: Vec::new(),
        }
    }
}

/// Every agent key with its environment variable, default and meaning.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc { key: "console_urls", env: "EDGEFLEET_AGENT_CONSOLE_URLS", kind: ValueKind::List, default: "(none)", meaning: "Console MQTT URLs, `mqtt://host:port` or `mqtts://host:port`, tried in order (env: comma-separated)." },
    KeyDoc { key: "ca_file", env: "EDGEFLEET_AGENT_CA_FILE", kind: ValueKind::Text, default: "(none)", meaning: "PEM CA certificate that signs the console's MQTT TLS certificate; required for `mqtts://` (the server name checked is the URL host)." },
    KeyDoc { key: "token", env: "EDGEFLEET_AGENT_TOKEN", kind: ValueKind::Text, default: "(none)", meaning: "Enrollment token (secret, from `edgefleet tokens create`): lets a new agent enroll, and names the only console key it will pin." },
    KeyDoc { key: "data_dir", env: "EDGEFLEET_AGENT_DATA_DIR", kind: ValueKind::Text, default: "/var/lib/edgefleet-agent", meaning: "Key, pinned console key, state database and queue." },
    KeyDoc { key: "heartbeat_interval", env: "EDGEFLEET_AGENT_HEARTBEAT_INTERVAL", kind: ValueKind::Text, default: "30s", meaning: "Time between heartbeats, 1s to 1h." },
    KeyDoc { key: "history_interval", env: "EDGEFLEET_AGENT_HISTORY_INTERVAL", kind: ValueKind::Text, default: "5m", meaning: "While the console is unreachable, one full heartbeat sample is queued this often, 1s to 1h, and sent with its time once the link is back, so charts have no gap (about 60 bytes each; over `queue_cap_mb` the oldest go first)." },
    KeyDoc { key: "keepalive", env: "EDGEFLEET_AGENT_KEEPALIVE", kind: ValueKind::Text, default: "150s", meaning: "MQTT keepalive, 5s to 20m: the agent hears from the broker at least this often. Once a keepalive would pass in silence, the next heartbeat goes at QoS 1 and its PUBACK proves the link (no PINGREQ while heartbeats flow); with no heartbeat due, the agent pings. Sent data unacknowledged by TCP for two keepalives (20 to 60 s), or a keepalive with nothing received and an unanswered ping a keepalive later, drops the link; unconfirmed heartbeats then go into the queue. The broker declares a silent agent dead after 1.5x. With heartbeats further apart than the keepalive, keep it below cellular NAT idle timeouts (often 2 to 5 min)." },
    KeyDoc { key: "queue_cap_mb", env: "EDGEFLEET_AGENT_QUEUE_CAP_MB", kind: ValueKind::Int, default: "16", meaning: "Store-and-forward queue cap in MB, 1 to 4096. Over it the oldest heartbeats go first; events and results are never dropped." },
    KeyDoc { key: "artifact_max_mb", env: "EDGEFLEET_AGENT_ARTIFACT_MAX_MB", kind: ValueKind::Int, default: "512", meaning: "update-app: the largest artifact download in MB, 1 to 65536; a bigger one is refused before it fills the disk." },
    KeyDoc { key: "artifact_unpacked_max_mb", env: "EDGEFLEET_AGENT_ARTIFACT_UNPACKED_MAX_MB", kind: ValueKind::Int, default: "2048", meaning: "update-app: the largest total size of an artifact's files once unpacked, in MB, 1 to 1048576 (archive bombs are refused whole)." },
    KeyDoc { key: "inventory_interval", env: "EDGEFLEET_AGENT_INVENTORY_INTERVAL", kind: ValueKind::Text, default: "6h", meaning: "Time between software inventory scans, 1m to 7d." },
    KeyDoc { key: "allow_scripts", env: "EDGEFLEET_AGENT_ALLOW_SCRIPTS", kind: ValueKind::Bool, default: "false", meaning: "Let the console run shell scripts (`run-script`) whose SHA-256 is on `script_allowlist`; off, the agent runs only the fixed command set." },
    KeyDoc { key: "script_allowlist", env: "EDGEFLEET_AGENT_SCRIPT_ALLOWLIST", kind: ValueKind::Text, default: "(none)", meaning: "File of hex SHA-256 hashes, one per line (`#` comments), of the scripts allowed; re-read for every script, refused if group- or world-writable. Required with `allow_scripts`." },
    KeyDoc { key: "topic_prefix", env: "EDGEFLEET_AGENT_TOPIC_PREFIX", kind: ValueKind::Text, default: "ef", meaning: "MQTT topic prefix; must match the console's." },
    KeyDoc { key: "disk_mounts", env: "EDGEFLEET_AGENT_DISK_MOUNTS", kind: ValueKind::List, default: "/", meaning: "Mount points whose fullest one is reported as disk %." },
    KeyDoc { key: "labels", env: "EDGEFLEET_AGENT_LABELS", kind: ValueKind::Text, default: "(none)", meaning: "Table of key = value labels reported in the birth (file only; the variable is reserved)." },
    KeyDoc { key: "apps", env: "EDGEFLEET_AGENT_APPS", kind: ValueKind::Text, default: "(none)", meaning: "`[[apps]]` entries: id, unit, binary_dir, config_path, config_format, version_file or version_command, health_url (file only; the variable is reserved)." },
];

impl AgentConfig {
    /// Loads from an optional file and an environment, then validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<AgentConfig, ConfigError> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k != "EDGEFLEET_AGENT_LABELS" && k != "EDGEFLEET_AGENT_APPS")
            .collect();
        let (config, prov): (AgentConfig, Provenance) =
            source::load(path, env, "EDGEFLEET_AGENT_", KEYS)?;
        config.validate(&prov)?;
        Ok(config)
    }

    pub fn load_from_process_env(path: Option<&Path>) -> Result<AgentConfig, ConfigError> {
        AgentConfig::load(path, std::env::vars())
    }

    fn validate(&self, prov: &Provenance) -> Result<(), ConfigError> {
        for url in &self.console_urls {
            parse_mqtt_url(url).map_err(|m| prov.invalid("console_urls", m))?;
        }
        check_range(
            prov,
            "heartbeat_interval",
            self.heartbeat_interval,
            HumanDuration::secs(1),
            HumanDuration::secs(3600),
        )?;
        check_range(
            prov,
            "history_interval",
            self.history_interval,
            HumanDuration::secs(1),
            HumanDuration::secs(3600),
        )?;
        check_range(
            prov,
            "keepalive",
            self.keepalive,
            HumanDuration::secs(5),
            HumanDuration::secs(1200),
        )?;
        check_range(
            prov,
            "inventory_interval",
            self.inventory_interval,
            HumanDuration::secs(60),
            HumanDuration::secs(7 * 86400),
        )?;
        if !(1..=4096).contains(&self.queue_cap_mb) {
            return Err(prov.invalid(
                "queue_cap_mb",
                format!("must be between 1 and 4096 (got {})", self.queue_cap_mb),
            ));
        }
        for (key, value, max) in [
            ("artifact_max_mb", self.artifact_max_mb, 65_536),
            (
                "artifact_unpacked_max_mb",
                self.artifact_unpacked_max_mb,
                1_048_576,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(prov.invalid(key, format!("must be between 1 and {max} (got {value})")));
            }
        }
        check_topic_prefix(prov, "topic_prefix", &self.topic_prefix)?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(prov.invalid("data_dir", "must not be empty"));
        }
        if self.allow_scripts && self.script_allowlist.is_none() {
            return Err(prov.invalid(
                "script_allowlist",
                "is required when allow_scripts = true (a file of the allowed scripts' SHA-256 hashes)",
            ));
        }
        let mut ids = BTreeSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let key = |field: &str| format!("apps[{i}].{field}");
            let bad = |field: &str, msg: String| ConfigError::Invalid {
                key: key(field),
                message: msg,
                origin: prov.origin("apps"),
            };
            let id_ok = (1..=32).contains(&app.id.len())
                && app
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !id_ok {
                return Err(bad(
                    "id",
                    format!("must be 1-32 characters of [a-z0-9-] (got {:?})", app.id),
                ));
            }
            if !ids.insert(app.id.as_str()) {
                return Err(bad("id", format!("duplicate app id {:?}", app.id)));
            }
            let unit_ok = !app.unit.is_empty()
                && app.unit.len() <= 256
                && app.unit.contains('.')
                && app
                    .unit
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
            if !unit_ok {
                return Err(bad(
                    "unit",
                    format!(
                        "must be a systemd unit name like \"app.service\" (got {:?})",
                        app.unit
                    ),
                ));
            }
            if app.config_path.is_some() && app.format().is_none() {
                return Err(bad("config_format", "is required when the config_path extension does not say (json, toml, yaml, env, ini)".into()));
            }
            if app.version_file.is_some() && app.version_command.is_some() {
                return Err(bad(
                    "version_command",
                    "set version_file or version_command, not both".into(),
                ));
            }
            if let Some(health) = &app.health_url {
                let ok = url::Url::parse(health)
                    .map(|u| matches!(u.scheme(), "http" | "https"))
                    .unwrap_or(false);
                if !ok {
                    return Err(bad(
                        "health_url",
                        format!("must be an http:// or https:// URL (got {health:?})"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The console URLs, parsed. Validation has already checked them.
    pub fn mqtt_urls(&self) -> Vec<MqttUrl> {
        self.console_urls
            .iter()
            .filter_map(|u| parse_mqtt_url(u).ok())
            .collect()
    }

    /// The effective config as TOML, with secrets redacted.
    pub fn show(&self) -> String {
        let mut shown = self.clone();
        if shown.token.is_some() {
            shown.token = Some(REDACTED.to_string());
        }
        source::render(&shown)
    }
}

impl AppConfig {
    /// The config file format: explicit, or from the file extension.
    pub fn format(&self) -> Option<ConfigFormat> {
        self.config_format.or_else(|| {
            let ext = self.config_path.as_ref()?.extension()?.to_str()?;
            Some(match ext {
                "json" => ConfigFormat::Json,
                "toml" => ConfigFormat::Toml,
                "yaml" | "yml" => ConfigFormat::Yaml,
                "env" => ConfigFormat::Env,
                "ini" | "conf" => ConfigFormat::Ini,
                _ => return None,
            })
        })
    }
}

/// Parses `mqtt://host[:port]` (default 1883) or `mqtts://host[:port]` (default 8883).
pub fn parse_mqtt_url(text: &str) -> Result<MqttUrl, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    let tls = match url.scheme() {
        "mqtt" => false,
        "mqtts" => true,
        other => {
            return Err(format!(
                "{text:?} must use mqtt:// or mqtts://, not {other}://"
            ))
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{text:?} has no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    if url.path() != "" && url.path() != "/" {
        return Err(format!("{text:?} must not have a path"));
    }
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    Ok(MqttUrl { tls, host, port })
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
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn no_file_and_no_env_gives_the_documented_defaults() {
        let c = AgentConfig::load(None, env(&[])).unwrap();
        assert_eq!(c, AgentConfig::default());
        assert_eq!(c.heartbeat_interval.get().as_secs(), 30);
        assert_eq!(c.keepalive.get().as_secs(), 150);
        assert_eq!(c.queue_cap_mb, 16);
        assert!(!c.allow_scripts);
    }

    #[test]
    fn validation_errors_name_the_key_the_range_and_the_file() {
        let (_d, path) = file("heartbeat_interval = \"0s\"\n");
        let err = AgentConfig::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "heartbeat_interval: must be between 1s and 1h (got \"0s\") in {}",
                path.display()
            )
        );
    }

    #[test]
    fn env_overrides_win_over_the_file_and_are_named_in_errors() {
        let (_d, path) = file("heartbeat_interval = \"10s\"\nconsole_urls = [\"mqtt://a\"]\n");
        let c = AgentConfig::load(
            Some(&path),
            env(&[
                ("EDGEFLEET_AGENT_HEARTBEAT_INTERVAL", "5s"),
                ("EDGEFLEET_AGENT_CONSOLE_URLS", "mqtts://b:9000, mqtt://c"),
            ]),
        )
        .unwrap();
        assert_eq!(c.heartbeat_interval.get().as_secs(), 5);
        assert_eq!(
            c.mqtt_urls(),
            vec![
                MqttUrl {
                    tls: true,
                    host: "b".into(),
                    port: 9000
                },
                MqttUrl {
                    tls: false,
                    host: "c".into(),
                    port: 1883
                }
            ]
        );
        let err = AgentConfig::load(Some(&path), env(&[("EDGEFLEET_AGENT_KEEPALIVE", "2h")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "keepalive: must be between 5s and 20m (got \"2h\") (from EDGEFLEET_AGENT_KEEPALIVE)"
        );
        let err = AgentConfig::load(None, env(&[("EDGEFLEET_AGENT_QUEUE_CAP_MB", "lots")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "EDGEFLEET_AGENT_QUEUE_CAP_MB: expected a whole number, got \"lots\""
        );
        let err = AgentConfig::load(None, env(&[("EDGEFLEET_AGENT_HEARTBEAT", "5s")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("EDGEFLEET_AGENT_HEARTBEAT: unknown variable"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_bad_toml_and_bad_types_name_file_and_key() {
        let (_d, path) = file("heartbeat_intervall = \"5s\"\n");
        let err = AgentConfig::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("heartbeat_intervall"),
            "{err}"
        );
        let (_d, path) = file("queue_cap_mb = = 3\n");
        let err = AgentConfig::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
        let (_d, path) = file("keepalive = \"soon\"\n");
        let err = AgentConfig::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keepalive") && err.contains("\"soon\""),
            "{err}"
        );
        let err = AgentConfig::load(Some(Path::new("/nonexistent/agent.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "cannot read config file /nonexistent/agent.toml");
    }

    #[test]
    fn console_urls_and_apps_are_validated() {
        for (bad, why) in [
            ("http://x", "must use mqtt:// or mqtts://"),
            ("mqtt://", "has no host"),
            ("nonsense", "is not a URL"),
        ] {
            let err = AgentConfig::load(None, env(&[("EDGEFLEET_AGENT_CONSOLE_URLS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("console_urls: ") && err.contains(why),
                "{err}"
            );
        }
        let (_d, path) = file("[[apps]]\nid = \"web\"\nunit = \"web.service\"\nconfig_path = \"/etc/web/config.toml\"\n\n[[apps]]\nid = \"web\"\nunit = \"x.service\"\n");
        let err = AgentConfig::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("apps[1].id: duplicate app id \"web\""),
            "{err}"
        );
        let (_d, path) = file("[[apps]]\nid = \"Web\"\nunit = \"web.service\"\n");
        assert!(AgentConfig::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string()
            .starts_with("apps[0].id: must be"));
        let (_d, path) = file("[[apps]]\nid = \"web\"\nunit = \"web.service\"\nconfig_path = \"/etc/web/config.weird\"\n");
        assert!(AgentConfig::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string()
            .starts_with("apps[0].config_format: is required"));
        let (_d, path) = file("[[apps]]\nid = \"web\"\nunit = \"web.service\"\nconfig_path = \"/etc/web/config.yml\"\nhealth_url = \"http://127.0.0.1:8080/health\"\n");
        let c = AgentConfig::load(Some(&path), env(&[])).unwrap();
        assert_eq!(c.apps[0].format(), Some(ConfigFormat::Yaml));
        let err = AgentConfig::load(None, env(&[("EDGEFLEET_AGENT_ALLOW_SCRIPTS", "true")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("script_allowlist: is required when allow_scripts = true"),
            "{err}"
        );
        let c = AgentConfig::load(
            None,
            env(&[
                ("EDGEFLEET_AGENT_ALLOW_SCRIPTS", "true"),
                (
                    "EDGEFLEET_AGENT_SCRIPT_ALLOWLIST",
                    "/etc/edgefleet-agent/scripts.sha256",
                ),
            ]),
        )
        .unwrap();
        assert!(c.allow_scripts && c.script_allowlist.is_some());
    }

    #[test]
    fn show_redacts_the_token() {
        let c = AgentConfig::load(None, env(&[("EDGEFLEET_AGENT_TOKEN", "ef1.secret")])).unwrap();
        let shown = c.show();
        assert!(
            shown.contains("token = \"<redacted>\"") && !shown.contains("ef1.secret"),
            "{shown}"
        );
        assert!(shown.contains("heartbeat_interval = \"30s\""), "{shown}");
    }

    /// Every validated agent key, one bad value each: the error starts with the key and
    /// names the file it came from.
    #[test]
    fn every_validated_key_names_itself_in_the_error() {
        let app =
            |extra: &str| format!("[[apps]]\nid = \"pump\"\nunit = \"pump.service\"\n{extra}\n");
        let cases: Vec<(String, &str, &str)> = vec![
            ("console_urls = [\"http://x\"]".into(), "console_urls", ""),
            (
                "heartbeat_interval = \"2h\"".into(),
                "heartbeat_interval",
                "between 1s and 1h",
            ),
            (
                "keepalive = \"1s\"".into(),
                "keepalive",
                "between 5s and 20m",
            ),
            (
                "inventory_interval = \"10s\"".into(),
                "inventory_interval",
                "between 1m and 7d",
            ),
            (
                "queue_cap_mb = 0".into(),
                "queue_cap_mb",
                "between 1 and 4096 (got 0)",
            ),
            (
                "artifact_max_mb = 0".into(),
                "artifact_max_mb",
                "between 1 and 65536 (got 0)",
            ),
            (
                "artifact_unpacked_max_mb = 2000000".into(),
                "artifact_unpacked_max_mb",
                "between 1 and 1048576",
            ),
            ("topic_prefix = \"ef/#\"".into(), "topic_prefix", ""),
            ("data_dir = \"\"".into(), "data_dir", "must not be empty"),
            (
                "allow_scripts = true".into(),
                "script_allowlist",
                "is required",
            ),
            (
                "[[apps]]\nid = \"Pump!\"\nunit = \"pump.service\"".into(),
                "apps[0].id",
                "[a-z0-9-]",
            ),
            (
                format!("{}{}", app(""), app("")),
                "apps[1].id",
                "duplicate app id",
            ),
            (
                "[[apps]]\nid = \"pump\"\nunit = \"pump\"".into(),
                "apps[0].unit",
                "systemd unit name",
            ),
            (
                app("config_path = \"/etc/pump.settings\""),
                "apps[0].config_format",
                "is required",
            ),
            (
                app("version_file = \"/v\"\nversion_command = \"pump -V\""),
                "apps[0].version_command",
                "not both",
            ),
            (
                app("health_url = \"ftp://x\""),
                "apps[0].health_url",
                "http:// or https://",
            ),
        ];
        for (toml, key, message) in cases {
            let (_d, path) = file(&toml);
            let err = AgentConfig::load(Some(&path), env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("{key}: ")), "{toml:?}: {err}");
            assert!(err.contains(message), "{toml:?}: {err}");
            // A key required by another one was not set itself: its origin is the default.
            let origin = if ["script_allowlist"].contains(&key) {
                "(default)".to_string()
            } else {
                path.display().to_string()
            };
            assert!(err.contains(&origin), "{toml:?}: {err}");
        }
    }
}
