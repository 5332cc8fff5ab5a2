//! Maintenance mode: while a host is in maintenance its offline and hotspot alerts wait,
//! and new commands are refused unless the operator allowed their action. Commands
//! already in flight finish. Maintenance ends by an operator or at its end time.

use edgefleet_codec::api::{MaintenanceRequest, MaintenanceView, SilenceUntil};

/// Actions an operator may allow during maintenance.
pub const ACTIONS: [&str; 7] = [
    "restart-app",
    "push-config",
    "update-app",
    "request-heartbeat",
    "rescan-inventory",
    "run-script",
    "rollback-app",
];

/// The 409 message for a refused command.
pub fn refusal(host: &str, m: &MaintenanceView, action: &str) -> String {
    let until = m
        .until
        .map(|u| format!(" until {}", crate::inventory::ms_rfc3339(u)))
        .unwrap_or_default();
    let allowed = if m.allow.is_empty() {
        "no commands are allowed".to_string()
    } else {
        format!("allowed: {}", m.allow.join(", "))
    };
    format!(
        "agent {host} is in maintenance{until} ({}): {action} refused; {allowed}",
        m.reason
    )
}

/// A checked maintenance window from a request.
pub fn from_request(
    req: MaintenanceRequest,
    actor: &str,
    now: u64,
) -> Result<MaintenanceView, String> {
    let reason = req.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err("reason: give 1 to 500 characters".into());
    }
    let until = match req.until {
        None => None,
        Some(SilenceUntil::At(ms)) => Some(ms),
        Some(SilenceUntil::For(text)) => {
            let d = humantime::parse_duration(text.trim())
                .map_err(|e| format!("until: {e} (a duration such as `2h`, or unix ms)"))?;
            Some(now + d.as_millis() as u64)
        }
    };
    if until.is_some_and(|u| u <= now) {
        return Err("until: must be in the future".into());
    }
    for a in &req.allow {
        if !ACTIONS.contains(&a.as_str()) {
            return Err(format!(
                "allow: {a:?} is not a command action ({})",
                ACTIONS.join(", ")
            ));
        }
    }
    let mut allow = req.allow;
    allow.sort();
    allow.dedup();
    Ok(MaintenanceView {
        reason,
        since: now,
        until,
        by: actor.to_string(),
        allow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_and_the_refusal_says_why() {
        let req = |until: Option<SilenceUntil>, allow: &[&str]| MaintenanceRequest {
            reason: "swap the modem".into(),
            until,
            allow: allow.iter().map(|s| s.to_string()).collect(),
        };
        let m = from_request(
            req(Some(SilenceUntil::For("2h".into())), &["request-heartbeat"]),
            "ops",
            1_000,
        )
        .unwrap();
        assert_eq!(m.until, Some(1_000 + 7_200_000));
        let text = refusal("abc", &m, "restart-app");
        assert!(
            text.contains("in maintenance until")
                && text.contains("swap the modem")
                && text.contains("allowed: request-heartbeat"),
            "{text}"
        );
        assert!(
            from_request(req(Some(SilenceUntil::At(5)), &[]), "ops", 1_000)
                .unwrap_err()
                .contains("future")
        );
        assert!(from_request(req(None, &["reboot"]), "ops", 1)
            .unwrap_err()
            .contains("\"reboot\""));
        assert!(from_request(MaintenanceRequest::default(), "ops", 1)
            .unwrap_err()
            .contains("reason"));
    }
}
