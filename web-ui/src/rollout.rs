//! Staged rollouts as the pages draw and create them: which host states are final,
//! progress of the whole rollout and of one wave, whether to keep refreshing, and the
//! create form's text (config lines, wave percentages) read into the API's types.

use std::collections::BTreeMap;

use edgefleet_codec::api::{ConfigScalar, RolloutView};

/// Host states after which the rollout does nothing more with the host.
pub fn host_done(state: &str) -> bool {
    matches!(
        state,
        "succeeded" | "failed" | "rolled-back" | "expired" | "reverted" | "revert-failed"
    )
}

/// Host states that count against a gate (or mean a revert went wrong).
pub fn host_failed(state: &str) -> bool {
    matches!(
        state,
        "failed" | "rolled-back" | "expired" | "revert-failed"
    )
}

/// Whether the rollout can still change by itself: the detail page refreshes until it
/// cannot. A paused rollout still has commands in flight whose results arrive.
pub fn is_live(state: &str) -> bool {
    matches!(state, "running" | "paused" | "aborting")
}

/// Hosts with a final state and all hosts, of the whole rollout (`wave: None`) or of
/// one wave.
pub fn progress(rollout: &RolloutView, wave: Option<usize>) -> (usize, usize) {
    rollout
        .hosts
        .iter()
        .filter(|h| wave.is_none_or(|w| h.wave == w))
        .fold((0, 0), |(done, all), h| {
            (done + usize::from(host_done(&h.state)), all + 1)
        })
}

/// `dotted.key = value` lines as push-config values: `true`/`false`, whole numbers and
/// decimals as such, anything else as text (surrounding quotes dropped). Lines without
/// `=` are skipped.
pub fn config_values(text: &str) -> BTreeMap<String, ConfigScalar> {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let value = if let Ok(b) = v.parse::<bool>() {
            ConfigScalar::Bool(b)
        } else if let Ok(i) = v.parse::<i64>() {
            ConfigScalar::Int(i)
        } else if let Ok(f) = v.parse::<f64>() {
            ConfigScalar::Float(f)
        } else {
            ConfigScalar::Str(v.trim_matches('"').to_string())
        };
        values.insert(k.trim().to_string(), value);
    }
    values
}

/// Cumulative wave percentages as typed, `25, 50 100` or `25%,100%`. The console checks
/// that they rise to 100; this only reads the numbers.
pub fn wave_percents(text: &str) -> Result<Vec<u8>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .map(|p| p.trim().trim_end_matches('%'))
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u8>()
                .map_err(|_| format!("waves: {p:?} is not a percentage"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_codec::api::RolloutHostView;

    #[test]
    fn form_text_reads_into_api_values() {
        let v = config_values("log.level = \"debug\"\nworkers=4\nratio = 0.5\non=true\nnonsense\n");
        assert_eq!(v["log.level"], ConfigScalar::Str("debug".into()));
        assert_eq!(v["workers"], ConfigScalar::Int(4));
        assert_eq!(v["ratio"], ConfigScalar::Float(0.5));
        assert_eq!(v["on"], ConfigScalar::Bool(true));
        assert_eq!(v.len(), 4);
        assert_eq!(wave_percents("25, 50 100%"), Ok(vec![25, 50, 100]));
        assert_eq!(wave_percents(" "), Ok(vec![]));
        assert!(wave_percents("25, half").unwrap_err().contains("half"));
        assert!(wave_percents("300").is_err());
    }

    fn host(wave: usize, state: &str) -> RolloutHostView {
        RolloutHostView {
            agent: format!("a{wave}{state}"),
            hostname: None,
            wave,
            state: state.into(),
            command: None,
            message: None,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn progress_counts_final_hosts_per_wave() {
        let rollout = RolloutView {
            id: "r1".into(),
            name: None,
            action: "push-config".into(),
            app: Some("sensor-hub".into()),
            version: None,
            state: "running".into(),
            reason: None,
            created_by: "admin".into(),
            created_at: 0,
            updated_at: 0,
            current_wave: 1,
            canary: 1,
            percents: vec![100],
            soak_s: 0,
            max_failure_pct: 5.0,
            min_executed: 1,
            rate_per_minute: None,
            waves: Vec::new(),
            hosts: vec![
                host(0, "succeeded"),
                host(1, "running"),
                host(1, "rolled-back"),
                host(1, "queued"),
            ],
        };
        assert_eq!(progress(&rollout, None), (2, 4));
        assert_eq!(progress(&rollout, Some(0)), (1, 1));
        assert_eq!(progress(&rollout, Some(1)), (1, 3));
        assert_eq!(progress(&rollout, Some(2)), (0, 0));
        assert!(host_failed("rolled-back") && !host_failed("succeeded"));
        assert!(is_live("paused") && !is_live("completed") && !is_live("aborted"));
    }
}
