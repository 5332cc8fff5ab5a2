//! Text for numbers and times, as the tables and cards show them.

/// Percentages at or above this are hot: shown red, and counted as hotspots by the console.
pub const HOT: u8 = 80;

pub fn is_hot(pct: Option<u8>) -> bool {
    pct.is_some_and(|p| p >= HOT)
}

/// `42 %`, or an en dash when the host has not reported it.
pub fn pct(value: Option<u8>) -> String {
    match value {
        Some(v) => format!("{v} %"),
        None => "–".into(),
    }
}

/// How long ago `then` was, relative to `now` (both unix ms): `just now`, `12 s ago`,
/// `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(now: u64, then: Option<u64>) -> String {
    let Some(then) = then else {
        return "never".into();
    };
    let s = now.saturating_sub(then) / 1000;
    match s {
        0..=4 => "just now".into(),
        5..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A duration in seconds as `3 d 4 h`, `5 h 12 min`, `7 min` or `40 s`.
pub fn duration(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{s} s")
    }
}

/// Bits per second from bytes per second: `0 bit/s`, `12.5 kbit/s`, `3.0 Mbit/s`.
pub fn rate(bytes_per_s: u32) -> String {
    let bits = f64::from(bytes_per_s) * 8.0;
    if bits < 1000.0 {
        format!("{bits:.0} bit/s")
    } else if bits < 1e6 {
        format!("{:.1} kbit/s", bits / 1e3)
    } else if bits < 1e9 {
        format!("{:.1} Mbit/s", bits / 1e6)
    } else {
        format!("{:.1} Gbit/s", bits / 1e9)
    }
}

/// A UTC timestamp, `2026-11-23 21:15:04 UTC`, from unix ms.
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, mo, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `21:15` (or `Nov 23` when `with_date`), for chart axes.
pub fn clock(ms: u64, with_date: bool) -> String {
    let secs = ms / 1000;
    if with_date {
        let (_, mo, d) = civil_from_days((secs / 86_400) as i64);
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!("{} {d}", MONTHS[(mo - 1) as usize])
    } else {
        let rem = secs % 86_400;
        format!("{:02}:{:02}", rem / 3600, rem % 3600 / 60)
    }
}

/// Howard Hinnant's days-to-civil: (year, month 1-12, day 1-31) for days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The share of `part` in `whole` as a whole percentage (0 when the fleet is empty).
pub fn share(part: usize, whole: usize) -> u32 {
    if whole == 0 {
        0
    } else {
        ((part as f64 / whole as f64) * 100.0).round() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_heat() {
        assert_eq!(pct(Some(7)), "7 %");
        assert_eq!(pct(None), "–");
        assert!(is_hot(Some(80)));
        assert!(!is_hot(Some(79)));
        assert!(!is_hot(None));
        assert_eq!(share(1, 3), 33);
        assert_eq!(share(0, 0), 0);
    }

    #[test]
    fn relative_times() {
        let now = 1_000_000_000;
        assert_eq!(ago(now, None), "never");
        assert_eq!(ago(now, Some(now - 1000)), "just now");
        assert_eq!(ago(now, Some(now - 12_000)), "12 s ago");
        assert_eq!(ago(now, Some(now - 5 * 60_000)), "5 min ago");
        assert_eq!(ago(now, Some(now - 3 * 3_600_000)), "3 h ago");
        assert_eq!(ago(now, Some(now - 2 * 86_400_000)), "2 d ago");
        // A clock slightly ahead of ours is not "in the future".
        assert_eq!(ago(now, Some(now + 3000)), "just now");
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(duration(40), "40 s");
        assert_eq!(duration(7 * 60 + 3), "7 min");
        assert_eq!(duration(5 * 3600 + 12 * 60), "5 h 12 min");
        assert_eq!(duration(3 * 86_400 + 4 * 3600), "3 d 4 h");
        assert_eq!(rate(100), "800 bit/s");
        assert_eq!(rate(1562), "12.5 kbit/s");
        assert_eq!(rate(375_000), "3.0 Mbit/s");
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(timestamp(1_709_210_096_000), "2024-02-29 12:34:56 UTC");
        assert_eq!(clock(1_709_210_096_000, false), "12:34");
        assert_eq!(clock(1_709_210_096_000, true), "Feb 29");
    }
}
