//! `edgefleet-agent config set`: one key of a config file changed in place. The file is
//! edited with `toml_edit`, so the admin's comments and layout survive; the result is
//! written to a temporary file in the same directory, loaded and validated exactly as the
//! agent would load it, and only then renamed over the original, which keeps its mode and
//! owner. A bad value therefore never reaches the file the service reads.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::source::{self, ConfigError, KeyDoc, Origin};

/// Sets `key` to `raw` in the agent config at `path` (created with mode 0600 if missing).
///
/// `raw` is read as the key's environment variable would be: lists are comma-separated,
/// booleans are `true`/`false`. `labels.NAME` sets one label. `apps` is file-only.
pub fn set_agent_key(path: &Path, key: &str, raw: &str) -> Result<(), ConfigError> {
    set_key(path, key, raw, crate::agent::KEYS, |p| {
        crate::AgentConfig::load(Some(p), std::iter::empty()).map(drop)
    })
}

fn set_key(
    path: &Path,
    key: &str,
    raw: &str,
    keys: &[KeyDoc],
    validate: impl Fn(&Path) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    let invalid = |message: &str| ConfigError::Invalid {
        key: key.to_string(),
        message: message.to_string(),
        origin: Origin::File(path.to_path_buf()),
    };
    let value = match key.split_once('.') {
        Some(("labels", name)) if !name.is_empty() && !name.contains('.') => {
            toml_edit::value(raw.trim())
        }
        _ => {
            let doc = keys
                .iter()
                .find(|k| k.key == key)
                .ok_or_else(|| invalid("unknown key (see docs/config.md for the list)"))?;
            if matches!(key, "labels" | "apps") {
                return Err(invalid(
                    "is a table; set labels one at a time (`labels.NAME`) and edit [[apps]] in the file",
                ));
            }
            edit_value(doc, raw).map_err(|m| invalid(&m))?
        }
    };

    let (text, meta) = match std::fs::read_to_string(path) {
        Ok(text) => (text, Some(std::fs::metadata(path).map_err(io_err(path))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                path: path.display().to_string(),
                message: e.to_string().trim_end().replace('\n', " "),
            })?;
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields at least one part");
    let mut table = doc.as_table_mut();
    for part in parts {
        let entry = table
            .entry(part)
            .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| invalid(&format!("`{part}` in the file is not a table")))?;
    }
    match table.get_mut(last) {
        // Replacing only the value keeps the key's comments and position.
        Some(item) if item.is_value() => {
            let decor = item.as_value().map(|v| v.decor().clone());
            *item = value;
            if let (Some(decor), Some(v)) = (decor, item.as_value_mut()) {
                *v.decor_mut() = decor;
            }
        }
        _ => {
            table.insert(last, value);
        }
    }

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.as_deref().unwrap_or("config"),
        std::process::id()
    ));
    let result = (|| {
        let mode = meta.as_ref().map(|m| m.permissions().mode() & 0o7777);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(doc.to_string().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_err(&tmp))?;
        if let Some(meta) = &meta {
            // Root editing the service user's config must leave it readable by that user.
            std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))
                .map_err(io_err(&tmp))?;
        }
        if let Some(mode) = mode {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(&tmp))?;
        }
        validate(&tmp).map_err(|e| rename_origin(e, &tmp, path))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Errors found in the temporary file are reported against the real one.
fn rename_origin(e: ConfigError, tmp: &Path, real: &Path) -> ConfigError {
    let tmp_name = tmp.display().to_string();
    match e {
        ConfigError::Invalid {
            key,
            message,
            origin: Origin::File(p),
        } if p == tmp => ConfigError::Invalid {
            key,
            message,
            origin: Origin::File(real.to_path_buf()),
        },
        ConfigError::Parse { path, message } if path == tmp_name => ConfigError::Parse {
            path: real.display().to_string(),
            message,
        },
        other => other,
    }
}

/// The value as it goes into the file, typed by the key's kind.
fn edit_value(doc: &KeyDoc, raw: &str) -> Result<toml_edit::Item, String> {
    Ok(match source::env_value(doc, raw)? {
        toml::Value::String(s) => toml_edit::value(s),
        toml::Value::Integer(i) => toml_edit::value(i),
        toml::Value::Boolean(b) => toml_edit::value(b),
        toml::Value::Array(items) => {
            let mut array = toml_edit::Array::new();
            for item in items {
                if let toml::Value::String(s) = item {
                    array.push(s);
                }
            }
            toml_edit::value(array)
        }
        other => return Err(format!("unsupported value {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ValueKind;

    fn kind(key: &str) -> ValueKind {
        crate::agent::KEYS
            .iter()
            .find(|k| k.key == key)
            .map(|k| k.kind)
            .unwrap()
    }

    #[test]
    fn setting_a_key_keeps_comments_mode_and_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "# the admin's note\nconsole_urls = [\"mqtt://old:1883\"] # trailing\n\n# beats\nheartbeat_interval = \"10s\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        set_agent_key(&path, "console_urls", "mqtt://a:1883, mqtt://b:1883").unwrap();
        set_agent_key(&path, "queue_cap_mb", "32").unwrap();
        set_agent_key(&path, "labels.site", "north").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# the admin's note\n"), "{text}");
        assert!(text.contains("# trailing"), "{text}");
        assert!(
            text.contains("# beats\nheartbeat_interval = \"10s\""),
            "{text}"
        );
        let cfg = crate::AgentConfig::load(Some(&path), std::iter::empty()).unwrap();
        assert_eq!(cfg.console_urls, ["mqtt://a:1883", "mqtt://b:1883"]);
        assert_eq!(cfg.queue_cap_mb, 32);
        assert_eq!(cfg.labels["site"], "north");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(kind("allow_scripts"), ValueKind::Bool);
    }

    #[test]
    fn a_missing_file_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        set_agent_key(&path, "token", "ef1.abc").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let cfg = crate::AgentConfig::load(Some(&path), std::iter::empty()).unwrap();
        assert_eq!(cfg.token.as_deref(), Some("ef1.abc"));
    }

    #[test]
    fn bad_values_name_the_key_and_leave_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let before = "heartbeat_interval = \"10s\"\n";
        std::fs::write(&path, before).unwrap();
        let cases = [
            ("heartbeat_interval", "2h", "heartbeat_interval"),
            ("queue_cap_mb", "lots", "queue_cap_mb"),
            ("console_urls", "http://x", "console_urls"),
            ("allow_scripts", "true", "script_allowlist"),
            ("no_such_key", "1", "no_such_key"),
            ("apps", "x", "apps"),
        ];
        for (key, value, named) in cases {
            let err = set_agent_key(&path, key, value).unwrap_err().to_string();
            assert!(err.starts_with(named), "{key}: {err}");
            assert!(!err.contains(".agent.toml."), "{key}: {err}");
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
