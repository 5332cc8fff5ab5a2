//! `docs/config.md` is generated from the key tables and checked here, so the documented
//! keys, variables and defaults cannot drift from the code. Regenerate with
//! `UPDATE_DOCS=1 cargo test -p edgefleet-config --test docs`.

use edgefleet_config::{agent, console, KeyDoc};

fn table(keys: &[KeyDoc]) -> String {
    let mut out =
        String::from("| key | environment variable | default | meaning |\n|---|---|---|---|\n");
    for k in keys {
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            k.key, k.env, k.default, k.meaning
        ));
    }
    out
}

fn render() -> String {
    format!(
        "# Configuration\n\n\
         Both binaries read a TOML file (`--config FILE`) and then environment variables, which win.\n\
         Durations are human strings: `30s`, `5m`, `6h`, `7d`. Unknown keys and unknown\n\
         `EDGEFLEET_*` variables are errors, and every error names the key and where its value\n\
         came from, e.g.\n\n\
         ```\n\
         heartbeat_interval: must be between 1s and 1h (got \"0s\") in /etc/edgefleet-agent/agent.toml\n\
         ```\n\n\
         `edgefleet-agent config show` prints the effective configuration with secrets redacted.\n\
         `edgefleet-agent config set KEY VALUE` changes one key of the file in place, keeping its\n\
         comments, mode and owner; the value is read as the key's variable would be (lists\n\
         comma-separated, `labels.NAME` for one label, `-` to read it from stdin), and the result\n\
         is validated before it replaces the file. Both default to `/etc/edgefleet-agent/agent.toml`,\n\
         where the package installs it.\n\n\
         <!-- Generated from config/src/{{agent,console}}.rs by config/tests/docs.rs. -->\n\n\
         ## Agent (`agent.toml`)\n\n{}\n\
         Example:\n\n\
         ```toml\n\
         console_urls = [\"mqtts://console.example.net:8883\"]\n\
         ca_file = \"/etc/edgefleet-agent/ca.pem\"\n\
         heartbeat_interval = \"30s\"\n\n\
         [labels]\n\
         site = \"ferry-7\"\n\n\
         [[apps]]\n\
         id = \"modbus-bridge\"\n\
         unit = \"modbus-bridge.service\"\n\
         config_path = \"/etc/modbus-bridge/config.toml\"\n\
         version_file = \"/opt/modbus-bridge/VERSION\"\n\
         health_url = \"http://127.0.0.1:9100/health\"\n\
         ```\n\n\
         ## Console (`console.toml`)\n\n{}",
        table(agent::KEYS),
        table(console::KEYS)
    )
}

#[test]
fn docs_config_md_matches_the_key_tables() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
    let expected = render();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(path, &expected).expect("write docs/config.md");
    }
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/config.md is out of date: run `UPDATE_DOCS=1 cargo test -p edgefleet-config --test docs`"
    );
}

#[test]
fn every_key_has_a_unique_prefixed_variable() {
    for (keys, prefix) in [
        (agent::KEYS, "EDGEFLEET_AGENT_"),
        (console::KEYS, "EDGEFLEET_CONSOLE_"),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        for k in keys {
            assert!(k.env.starts_with(prefix), "{}", k.env);
            let derived = format!("{prefix}{}", k.key.replace('.', "_").to_uppercase());
            assert_eq!(k.env, derived, "variable names follow the key");
            assert!(seen.insert(k.env), "duplicate {}", k.env);
        }
    }
}
