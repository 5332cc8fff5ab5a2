//! push-config: merging dotted `key → value` pairs into an app's config file in its own
//! format, and writing it back atomically with a backup.
//!
//! What is preserved: TOML keeps comments, order and formatting (`toml_edit`); JSON keeps
//! key order; `env` and `ini` are edited line by line, so comments and unrelated lines stay
//! exactly as they were. YAML is re-serialized (`serde_yaml`): key order stays, comments do
//! not; this is the one format where a push loses comments.
//!
//! A value whose existing type differs (a string where a number is, a scalar where a table
//! is), a path through a non-table, or a file that does not parse is an error, and the file
//! is not touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgefleet_codec::ConfigValue;
use edgefleet_config::ConfigFormat;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("the existing {format} file does not parse: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    #[error("{key}: {message}")]
    Key { key: String, message: String },
}

pub fn format_name(f: ConfigFormat) -> &'static str {
    match f {
        ConfigFormat::Json => "json",
        ConfigFormat::Toml => "toml",
        ConfigFormat::Yaml => "yaml",
        ConfigFormat::Env => "env",
        ConfigFormat::Ini => "ini",
    }
}

fn kind(v: &ConfigValue) -> &'static str {
    match v {
        ConfigValue::Bool(_) => "a boolean",
        ConfigValue::Int(_) => "an integer",
        ConfigValue::Float(_) => "a number",
        ConfigValue::Str(_) => "a string",
    }
}

/// Returns the new file text.
pub fn merge(
    text: &str,
    format: ConfigFormat,
    values: &BTreeMap<String, ConfigValue>,
) -> Result<String, MergeError> {
    for key in values.keys() {
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(MergeError::Key {
                key: key.clone(),
                message: "not a dotted key path".into(),
            });
        }
    }
    match format {
        ConfigFormat::Toml => merge_toml(text, values),
        ConfigFormat::Json => merge_json(text, values),
        ConfigFormat::Yaml => merge_yaml(text, values),
        ConfigFormat::Env => merge_env(text, values),
        ConfigFormat::Ini => merge_ini(text, values),
    }
}

fn merge_toml(text: &str, values: &BTreeMap<String, ConfigValue>) -> Result<String, MergeError> {
    use toml_edit::{value, DocumentMut, Item, Table};
    let mut doc: DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| MergeError::Parse {
                format: "toml",
                message: e.to_string().trim().replace('\n', " "),
            })?;
    for (key, v) in values {
        let parts: Vec<&str> = key.split('.').collect();
        let (last, path) = parts.split_last().expect("checked non-empty");
        let mut table: &mut Table = doc.as_table_mut();
        for (i, part) in path.iter().enumerate() {
            let entry = table.entry(part).or_insert_with(|| {
                let mut t = Table::new();
                t.set_implicit(true);
                Item::Table(t)
            });
            table = entry.as_table_mut().ok_or_else(|| MergeError::Key {
                key: key.clone(),
                message: format!("`{}` is not a table", parts[..=i].join(".")),
            })?;
        }
        let new = match v {
            ConfigValue::Bool(b) => value(*b),
            ConfigValue::Int(n) => value(*n),
            ConfigValue::Float(f) => value(*f),
            ConfigValue::Str(s) => value(s.as_str()),
        };
        if let Some(old) = table.get(last) {
            let same = matches!(
                (old.as_value(), v),
                (Some(toml_edit::Value::Boolean(_)), ConfigValue::Bool(_))
                    | (Some(toml_edit::Value::Integer(_)), ConfigValue::Int(_))
                    | (
                        Some(toml_edit::Value::Float(_)),
                        ConfigValue::Float(_) | ConfigValue::Int(_)
                    )
                    | (Some(toml_edit::Value::String(_)), ConfigValue::Str(_))
            );
            if !same {
                return Err(MergeError::Key {
                    key: key.clone(),
                    message: format!("the file has {} here, the push {}", toml_kind(old), kind(v)),
                });
            }
            // An integer pushed into a float keeps the float type.
            let new = match (old.as_value(), v) {
                (Some(toml_edit::Value::Float(_)), ConfigValue::Int(n)) => value(*n as f64),
                _ => new,
            };
            // Keep the old value's decoration (comments, spacing) around the new one.
            let decor = old.as_value().map(|o| o.decor().clone());
            table[last] = new;
            if let (Some(decor), Some(v)) = (decor, table[last].as_value_mut()) {
                *v.decor_mut() = decor;
            }
        } else {
            table[last] = new;
        }
    }
    Ok(doc.to_string())
}

fn toml_kind(item: &toml_edit::Item) -> &'static str {
    match item.as_value() {
        Some(toml_edit::Value::Boolean(_)) => "a boolean",
        Some(toml_edit::Value::Integer(_)) => "an integer",
        Some(toml_edit::Value::Float(_)) => "a number",
        Some(toml_edit::Value::String(_)) => "a string",
        Some(_) => "an array or inline table",
        None => "a table",
    }
}

fn json_value(v: &ConfigValue) -> serde_json::Value {
    match v {
        ConfigValue::Bool(b) => serde_json::Value::Bool(*b),
        ConfigValue::Int(n) => serde_json::Value::from(*n),
        ConfigValue::Float(f) => serde_json::Value::from(*f),
        ConfigValue::Str(s) => serde_json::Value::String(s.clone()),
    }
}

fn same_json_kind(old: &serde_json::Value, v: &ConfigValue) -> bool {
    matches!(
        (old, v),
        (serde_json::Value::Bool(_), ConfigValue::Bool(_))
            | (
                serde_json::Value::Number(_),
                ConfigValue::Int(_) | ConfigValue::Float(_)
            )
            | (serde_json::Value::String(_), ConfigValue::Str(_))
            | (serde_json::Value::Null, _)
    )
}

fn merge_json(text: &str, values: &BTreeMap<String, ConfigValue>) -> Result<String, MergeError> {
    let mut doc: serde_json::Value = serde_json::from_str(text).map_err(|e| MergeError::Parse {
        format: "json",
        message: e.to_string(),
    })?;
    for (key, v) in values {
        set_tree(
            &mut doc,
            key,
            v,
            "json",
            |node| node.as_object_mut(),
            same_json_kind,
            json_value,
        )?;
    }
    let mut out = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    out.push('\n');
    Ok(out)
}

fn merge_yaml(text: &str, values: &BTreeMap<String, ConfigValue>) -> Result<String, MergeError> {
    let mut doc: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_yaml::from_str(text).map_err(|e| MergeError::Parse {
            format: "yaml",
            message: e.to_string(),
        })?
    };
    for (key, v) in values {
        set_tree(
            &mut doc,
            key,
            v,
            "yaml",
            |node| node.as_object_mut(),
            same_json_kind,
            json_value,
        )?;
    }
    serde_yaml::to_string(&doc).map_err(|e| MergeError::Parse {
        format: "yaml",
        message: e.to_string(),
    })
}

/// Sets a dotted path in a JSON-shaped tree, creating objects on the way.
fn set_tree(
    doc: &mut serde_json::Value,
    key: &str,
    v: &ConfigValue,
    _format: &'static str,
    as_map: fn(&mut serde_json::Value) -> Option<&mut serde_json::Map<String, serde_json::Value>>,
    same: fn(&serde_json::Value, &ConfigValue) -> bool,
    to_value: fn(&ConfigValue) -> serde_json::Value,
) -> Result<(), MergeError> {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, path) = parts.split_last().expect("checked non-empty");
    let mut node = doc;
    for (i, part) in path.iter().enumerate() {
        let map = as_map(node).ok_or_else(|| MergeError::Key {
            key: key.to_string(),
            message: format!("`{}` is not an object", parts[..i].join(".")),
        })?;
        node = map
            .entry(part.to_string())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    let map = as_map(node).ok_or_else(|| MergeError::Key {
        key: key.to_string(),
        message: format!("`{}` is not an object", path.join(".")),
    })?;
    if let Some(old) = map.get(*last) {
        if !same(old, v) {
            return Err(MergeError::Key {
                key: key.to_string(),
                message: format!("the file has another type here than the push ({})", kind(v)),
            });
        }
    }
    map.insert(last.to_string(), to_value(v));
    Ok(())
}

fn scalar_text(v: &ConfigValue) -> String {
    match v {
        ConfigValue::Bool(b) => b.to_string(),
        ConfigValue::Int(n) => n.to_string(),
        ConfigValue::Float(f) => f.to_string(),
        ConfigValue::Str(s) => s.clone(),
    }
}

fn merge_env(text: &str, values: &BTreeMap<String, ConfigValue>) -> Result<String, MergeError> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (key, v) in values {
        if key.contains('.') || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(MergeError::Key {
                key: key.clone(),
                message: "env files take plain variable names ([A-Za-z0-9_])".into(),
            });
        }
        let mut value = scalar_text(v);
        if value.contains([' ', '#', '"', '\'', '$', '\\']) || value.is_empty() {
            value = format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""));
        }
        let line = format!("{key}={value}");
        let found = lines.iter_mut().find(|l| {
            let t = l.trim_start();
            let t = t.strip_prefix("export ").unwrap_or(t);
            t.split_once('=').is_some_and(|(k, _)| k.trim() == key)
        });
        match found {
            Some(l) => {
                let export = l.trim_start().starts_with("export ");
                *l = if export {
                    format!("export {line}")
                } else {
                    line
                };
            }
            None => lines.push(line),
        }
    }
    Ok(lines.join("\n") + "\n")
}

fn merge_ini(text: &str, values: &BTreeMap<String, ConfigValue>) -> Result<String, MergeError> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (key, v) in values {
        let (section, name) = match key.rsplit_once('.') {
            Some((s, n)) if !s.contains('.') => (Some(s), n),
            Some(_) => {
                return Err(MergeError::Key {
                    key: key.clone(),
                    message: "ini files take `key` or `section.key`".into(),
                })
            }
            None => (None, key.as_str()),
        };
        let line = format!("{name} = {}", scalar_text(v));
        // The lines of the target section: from its header (or the top) to the next header.
        let start = match section {
            None => 0,
            Some(s) => match lines.iter().position(|l| l.trim() == format!("[{s}]")) {
                Some(i) => i + 1,
                None => {
                    if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                        lines.push(String::new());
                    }
                    lines.push(format!("[{s}]"));
                    lines.len()
                }
            },
        };
        let end = lines[start..]
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .map_or(lines.len(), |p| start + p);
        let existing = lines[start..end].iter().position(|l| {
            let t = l.trim_start();
            !t.starts_with(['#', ';']) && t.split_once('=').is_some_and(|(k, _)| k.trim() == name)
        });
        match existing {
            Some(i) => lines[start + i] = line,
            None => {
                // After the section's last non-blank line.
                let mut at = end;
                while at > start && lines[at - 1].trim().is_empty() {
                    at -= 1;
                }
                lines.insert(at, line);
            }
        }
    }
    Ok(lines.join("\n") + "\n")
}

/// Where the previous version of a pushed config is kept.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".edgefleet-backup");
    path.with_file_name(name)
}

/// Writes `text` to `path` atomically (temp file in the same directory, fsync, rename),
/// keeping the file's permissions.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".edgefleet-tmp");
    let tmp = dir.join(name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions())?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, ConfigValue)]) -> BTreeMap<String, ConfigValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn toml_keeps_comments_and_order_and_creates_tables() {
        let text = "# main settings\nname = \"pump\" # the name\nport = 8080\n\n[log]\n# how loud\nlevel = \"info\"\n";
        let out = merge(
            text,
            ConfigFormat::Toml,
            &vals(&[
                ("log.level", ConfigValue::Str("debug".into())),
                ("port", ConfigValue::Int(9090)),
                ("net.timeout_s", ConfigValue::Float(1.5)),
            ]),
        )
        .unwrap();
        assert!(
            out.starts_with("# main settings\nname = \"pump\" # the name\nport = 9090\n"),
            "{out}"
        );
        assert!(out.contains("# how loud\nlevel = \"debug\""), "{out}");
        assert!(out.contains("[net]\ntimeout_s = 1.5"), "{out}");
        let err = merge(
            text,
            ConfigFormat::Toml,
            &vals(&[("port", ConfigValue::Str("x".into()))]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("port: the file has an integer here"),
            "{err}"
        );
        let err = merge(
            text,
            ConfigFormat::Toml,
            &vals(&[("name.x", ConfigValue::Int(1))]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`name` is not a table"), "{err}");
        assert!(matches!(
            merge(
                "a = [",
                ConfigFormat::Toml,
                &vals(&[("a", ConfigValue::Int(1))])
            ),
            Err(MergeError::Parse { format: "toml", .. })
        ));
    }

    #[test]
    fn json_and_yaml_merge_nested_keys_and_refuse_type_changes() {
        let json = "{\"b\": 1, \"a\": {\"level\": \"info\"}}";
        let out = merge(
            json,
            ConfigFormat::Json,
            &vals(&[
                ("a.level", ConfigValue::Str("debug".into())),
                ("c.d", ConfigValue::Bool(true)),
            ]),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["a"]["level"], "debug");
        assert_eq!(v["c"]["d"], true);
        assert!(
            out.find("\"b\"").unwrap() < out.find("\"a\"").unwrap(),
            "key order kept: {out}"
        );
        assert!(merge(
            json,
            ConfigFormat::Json,
            &vals(&[("b", ConfigValue::Str("x".into()))])
        )
        .is_err());
        assert!(merge(
            "{",
            ConfigFormat::Json,
            &vals(&[("b", ConfigValue::Int(1))])
        )
        .is_err());

        let yaml = "server:\n  port: 80\nname: pump\n";
        let out = merge(
            yaml,
            ConfigFormat::Yaml,
            &vals(&[("server.port", ConfigValue::Int(8080))]),
        )
        .unwrap();
        assert!(
            out.contains("port: 8080") && out.contains("name: pump"),
            "{out}"
        );
        assert!(merge(
            yaml,
            ConfigFormat::Yaml,
            &vals(&[("name.x", ConfigValue::Int(1))])
        )
        .is_err());
    }

    #[test]
    fn env_and_ini_edit_lines_in_place() {
        let env = "# service env\nexport LOG_LEVEL=info\nPORT=80\n";
        let out = merge(
            env,
            ConfigFormat::Env,
            &vals(&[
                ("LOG_LEVEL", ConfigValue::Str("debug".into())),
                ("NAME", ConfigValue::Str("a b".into())),
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            "# service env\nexport LOG_LEVEL=debug\nPORT=80\nNAME=\"a b\"\n"
        );
        assert!(merge(
            env,
            ConfigFormat::Env,
            &vals(&[("a.b", ConfigValue::Int(1))])
        )
        .is_err());

        let ini = "; top\nname = pump\n\n[log]\nlevel = info\n\n[net]\nport = 80\n";
        let out = merge(
            ini,
            ConfigFormat::Ini,
            &vals(&[
                ("log.level", ConfigValue::Str("debug".into())),
                ("log.file", ConfigValue::Str("/var/log/p".into())),
                ("db.host", ConfigValue::Str("x".into())),
            ]),
        )
        .unwrap();
        assert_eq!(out, "; top\nname = pump\n\n[log]\nlevel = debug\nfile = /var/log/p\n\n[net]\nport = 80\n\n[db]\nhost = x\n");
    }

    #[test]
    fn atomic_writes_replace_the_file_and_keep_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, "a = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            backup_path(&path),
            dir.path().join("app.toml.edgefleet-backup")
        );
    }
}
