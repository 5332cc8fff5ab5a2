//! The shared loader: TOML file, then `EDGEFLEET_*` environment overrides, then validation
//! with errors that name the key and where its value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// What went wrong, always naming the file, key or variable involved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write config file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    #[error("{key}: {message} {origin}")]
    Invalid {
        key: String,
        message: String,
        origin: Origin,
    },
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(String),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "in {}", p.display()),
            Origin::Env(v) => write!(f, "(from {v})"),
            Origin::Default => f.write_str("(default)"),
        }
    }
}

/// The type of a key, which decides how an environment value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    Int,
    Bool,
    /// Comma-separated.
    List,
}

/// One documented key. `docs/config.md` is checked against these tables by a test.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// Dotted path in the TOML file, e.g. `presence.grace`.
    pub key: &'static str,
    pub env: &'static str,
    pub kind: ValueKind,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Where each key's value came from.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    file: Option<PathBuf>,
    file_keys: Vec<String>,
    env_keys: BTreeMap<String, String>,
}

impl Provenance {
    pub fn origin(&self, key: &str) -> Origin {
        if let Some(var) = self.env_keys.get(key) {
            return Origin::Env(var.clone());
        }
        match &self.file {
            Some(path) if self.file_keys.iter().any(|k| k == key) => Origin::File(path.clone()),
            _ => Origin::Default,
        }
    }

    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            message: message.into(),
            origin: self.origin(key),
        }
    }

    /// Whether the key was set explicitly (file or env) rather than defaulted.
    pub fn is_set(&self, key: &str) -> bool {
        self.origin(key) != Origin::Default
    }
}

/// Loads `T` from an optional TOML file and the given environment.
pub(crate) fn load<T: DeserializeOwned>(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    env_prefix: &str,
    keys: &[KeyDoc],
) -> Result<(T, Provenance), ConfigError> {
    let mut prov = Provenance::default();
    let mut table = toml::Table::new();
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // Deserializing the file alone first gives errors with line numbers and key names.
        toml::from_str::<T>(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        collect_keys(&table, "", &mut prov.file_keys);
        prov.file = Some(path.to_path_buf());
    }
    for (var, value) in env {
        if !var.starts_with(env_prefix) {
            continue;
        }
        let doc = keys
            .iter()
            .find(|k| k.env == var)
            .ok_or_else(|| ConfigError::Env {
                var: var.clone(),
                message: "unknown variable (see docs/config.md for the list)".into(),
            })?;
        let value = env_value(doc, &value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        insert(&mut table, doc.key, value);
        prov.env_keys.insert(doc.key.to_string(), var);
    }
    let config = toml::Value::Table(table).try_into::<T>().map_err(|e| {
        let vars: Vec<&str> = prov.env_keys.values().map(String::as_str).collect();
        ConfigError::Env {
            var: vars.join(", "),
            message: e.to_string().trim_end().replace('\n', " "),
        }
    })?;
    Ok((config, prov))
}

fn collect_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let toml::Value::Table(t) = v {
            collect_keys(t, &key, out);
        }
        out.push(key);
    }
}

pub(crate) fn env_value(doc: &KeyDoc, raw: &str) -> Result<toml::Value, String> {
    let raw = raw.trim();
    Ok(match doc.kind {
        ValueKind::Text => toml::Value::String(raw.to_string()),
        ValueKind::Int => toml::Value::Integer(
            raw.parse()
                .map_err(|_| format!("expected a whole number, got {raw:?}"))?,
        ),
        ValueKind::Bool => toml::Value::Boolean(match raw {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(format!("expected true or false, got {raw:?}")),
        }),
        ValueKind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
    })
}

fn insert(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().expect("split yields at least one part");
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = entry.as_table_mut().expect("just made it a table");
    }
    current.insert(last.to_string(), value);
}

/// Renders a config as TOML; secrets must already be redacted by the caller.
pub(crate) fn render<T: serde::Serialize>(config: &T) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

pub(crate) const REDACTED: &str = "<redacted>";

/// Checks a duration is within bounds.
pub(crate) fn check_range(
    prov: &Provenance,
    key: &str,
    value: crate::HumanDuration,
    min: crate::HumanDuration,
    max: crate::HumanDuration,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(prov.invalid(
            key,
            format!("must be between {min} and {max} (got \"{value}\")"),
        ));
    }
    Ok(())
}

/// Topic prefixes are paid for on every publish and must not contain MQTT wildcards.
pub(crate) fn check_topic_prefix(
    prov: &Provenance,
    key: &str,
    prefix: &str,
) -> Result<(), ConfigError> {
    let ok = (1..=16).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(prov.invalid(
            key,
            format!("must be 1-16 characters of [a-z0-9_-] (got {prefix:?})"),
        ))
    }
}
