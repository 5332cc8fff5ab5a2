//! Bodies of the `cargo fuzz` targets in `config/fuzz/`, here so stable tests can run them
//! too. Each must never panic: a bad config is always a `ConfigError`.
//!
//! Input layout: the bytes before the first NUL are the TOML file, the bytes after it are
//! environment lines `NAME=value`, so one input exercises the file parser, the variable
//! parser and the validation together.

use std::io::Write;

fn split(data: &[u8]) -> (&[u8], Vec<(String, String)>) {
    let (file, env) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let env = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (file, env)
}

/// The loaders read a file; one scratch file per process keeps the fuzzer fast.
fn with_file(bytes: &[u8], f: impl FnOnce(&std::path::Path)) {
    let path = std::env::temp_dir().join(format!("edgefleet-fuzz-{}.toml", std::process::id()));
    let written = std::fs::File::create(&path).and_then(|mut file| file.write_all(bytes));
    if written.is_ok() {
        f(&path);
    }
}

pub fn agent_config(data: &[u8]) {
    let (file, env) = split(data);
    let env: Vec<_> = env
        .into_iter()
        .map(|(k, v)| (format!("EDGEFLEET_AGENT_{k}"), v))
        .collect();
    with_file(file, |path| {
        if let Ok(config) = crate::AgentConfig::load(Some(path), env) {
            let _ = config.mqtt_urls();
            let _ = config.show();
        }
    });
}

pub fn console_config(data: &[u8]) {
    let (file, env) = split(data);
    let env: Vec<_> = env
        .into_iter()
        .map(|(k, v)| (format!("EDGEFLEET_CONSOLE_{k}"), v))
        .collect();
    with_file(file, |path| {
        if let Ok(config) = crate::ConsoleConfig::load(Some(path), env) {
            let _ = config.show();
        }
    });
}

/// Durations (`30s`, `1h30m`, through serde as in a file) and console URLs.
pub fn values(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = toml::Value::String(text.to_string()).try_into::<crate::HumanDuration>();
    let _ = crate::agent::parse_mqtt_url(&text);
}

/// A fuzz body.
pub type Target = fn(&[u8]);

/// Every body, by target name, for the stable tests.
pub const TARGETS: &[(&str, Target)] = &[
    ("agent_config", agent_config),
    ("console_config", console_config),
    ("config_values", values),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bodies_survive_garbage_and_near_misses() {
        let inputs: &[&[u8]] = &[
            b"",
            b"\0",
            b"heartbeat_interval = \"99999999999999999999h\"",
            b"queue_cap_mb = -1\0QUEUE_CAP_MB=18446744073709551616",
            b"[[apps]]\nid=\"a\"\nunit=\"a.service\"\n[[apps]]\nid=\"a\"",
            b"console_urls = [\"mqtt://[::1\"]",
            b"\0HEARTBEAT_INTERVAL=1h1h1h1h\nCONSOLE_URLS=,,,,",
            b"[http]\nbind = \"999.0.0.1:80\"\0MQTT_MAX_PAYLOAD=0",
            b"\xff\xfe\x00\xff",
            b"1s2m3h4d5w",
        ];
        for (name, body) in TARGETS {
            for input in inputs {
                body(input);
            }
            // A little random noise too.
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..300 {
                let len = (x % 64) as usize;
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let alphabet = b"=\"[]{}.0123456789abcdefhmsdw_,\n\0 #:/";
                        alphabet[(x % alphabet.len() as u64) as usize]
                    })
                    .collect();
                body(&bytes);
            }
            let _ = name;
        }
    }
}
