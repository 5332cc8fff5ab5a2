//! How far a staged rollout has got, as the rollout pages draw it: which host states are
//! final, progress of the whole rollout and of one wave, and whether to keep refreshing.

use edgefleet_codec::api::RolloutView;

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

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_codec::api::RolloutHostView;

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
