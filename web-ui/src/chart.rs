//! Chart geometry: scales, axis ticks and SVG paths for the metric charts. Pure, so the
//! numbers are unit-tested natively; the view only draws what this computes.

/// The drawing area inside an SVG `viewBox` of `width × height`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    pub width: f64,
    pub height: f64,
    /// Margins for the axis labels.
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Frame {
    pub const METRIC: Frame = Frame {
        width: 640.0,
        height: 200.0,
        left: 40.0,
        right: 12.0,
        top: 10.0,
        bottom: 24.0,
    };

    pub fn plot_width(&self) -> f64 {
        self.width - self.left - self.right
    }

    pub fn plot_height(&self) -> f64 {
        self.height - self.top - self.bottom
    }
}

/// Maps time (unix ms) and values onto a [`Frame`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub frame: Frame,
    pub start: u64,
    pub end: u64,
    /// The top of the value axis (the bottom is 0).
    pub max: f64,
}

impl Scale {
    pub fn x(&self, at: u64) -> f64 {
        let span = self.end.saturating_sub(self.start).max(1) as f64;
        let t = at.clamp(self.start, self.end) - self.start;
        self.frame.left + t as f64 / span * self.frame.plot_width()
    }

    pub fn y(&self, value: f64) -> f64 {
        let v = value.clamp(0.0, self.max);
        self.frame.top + (1.0 - v / self.max.max(f64::MIN_POSITIVE)) * self.frame.plot_height()
    }

    /// The time under a horizontal position (for the hover readout).
    pub fn time_at(&self, x: f64) -> u64 {
        let f = ((x - self.frame.left) / self.frame.plot_width()).clamp(0.0, 1.0);
        self.start + (f * self.end.saturating_sub(self.start) as f64).round() as u64
    }
}

/// Tick steps for the time axis, smallest first.
const TIME_STEPS_MS: [u64; 14] = [
    60_000,
    5 * 60_000,
    10 * 60_000,
    15 * 60_000,
    30 * 60_000,
    3_600_000,
    2 * 3_600_000,
    3 * 3_600_000,
    6 * 3_600_000,
    12 * 3_600_000,
    86_400_000,
    2 * 86_400_000,
    7 * 86_400_000,
    14 * 86_400_000,
];

/// Round times (multiples of a step, UTC) inside `[start, end]`, at most `max_ticks`.
pub fn time_ticks(start: u64, end: u64, max_ticks: usize) -> Vec<u64> {
    let span = end.saturating_sub(start);
    let step = TIME_STEPS_MS
        .into_iter()
        .find(|s| span / s < max_ticks as u64)
        .unwrap_or(TIME_STEPS_MS[TIME_STEPS_MS.len() - 1]);
    let first = start.div_ceil(step) * step;
    (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= end)
        .collect()
}

/// Whether time labels need the date rather than the clock time.
pub fn ticks_show_dates(start: u64, end: u64) -> bool {
    end.saturating_sub(start) > 2 * 86_400_000
}

/// The top of a value axis for data up to `max`: 1, 2 or 5 × 10ⁿ, at least `floor`.
pub fn nice_max(max: f64, floor: f64) -> f64 {
    let m = max.max(floor);
    if m <= 0.0 || !m.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(m.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|f| f * mag)
        .find(|v| *v >= m)
        .unwrap_or(10.0 * mag)
}

/// Five evenly spaced value ticks from 0 to `max`.
pub fn value_ticks(max: f64) -> Vec<f64> {
    (0..=4).map(|i| max * f64::from(i) / 4.0).collect()
}

/// An SVG path through `points` (time, value), starting a new segment where two points
/// are further apart than `gap_ms` (the host was offline: no line is drawn across).
pub fn line_path(scale: &Scale, points: &[(u64, f64)], gap_ms: u64) -> String {
    let mut d = String::new();
    let mut last: Option<u64> = None;
    for &(at, v) in points {
        let cmd = match last {
            Some(prev) if at.saturating_sub(prev) <= gap_ms => 'L',
            _ => 'M',
        };
        if !d.is_empty() {
            d.push(' ');
        }
        d.push_str(&format!("{cmd}{:.1},{:.1}", scale.x(at), scale.y(v)));
        last = Some(at);
    }
    d
}

/// The largest gap to bridge for points that are normally `typical_ms` apart.
pub fn gap_for(points: &[(u64, f64)]) -> u64 {
    let mut gaps: Vec<u64> = points
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0))
        .collect();
    if gaps.is_empty() {
        return u64::MAX;
    }
    gaps.sort_unstable();
    gaps[gaps.len() / 2].max(1) * 3
}

/// The index of the point nearest in time to `at`, for the hover readout.
pub fn nearest(points: &[(u64, f64)], at: u64) -> Option<usize> {
    if points.is_empty() {
        return None;
    }
    let i = points.partition_point(|p| p.0 < at);
    let candidates = [i.checked_sub(1), (i < points.len()).then_some(i)];
    candidates
        .into_iter()
        .flatten()
        .min_by_key(|&j| points[j].0.abs_diff(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale() -> Scale {
        Scale {
            frame: Frame::METRIC,
            start: 1_000_000,
            end: 1_000_000 + 3_600_000,
            max: 100.0,
        }
    }

    #[test]
    fn scales_map_the_domain_onto_the_plot_area() {
        let s = scale();
        let f = Frame::METRIC;
        assert_eq!(s.x(s.start), f.left);
        assert_eq!(s.x(s.end), f.width - f.right);
        assert_eq!(s.x(0), f.left, "before the range clamps to the left edge");
        assert_eq!(s.y(0.0), f.height - f.bottom);
        assert_eq!(s.y(100.0), f.top);
        assert_eq!(s.y(250.0), f.top, "values over the top clamp");
        assert_eq!(s.time_at(s.x(s.start + 1_800_000)), s.start + 1_800_000);
    }

    #[test]
    fn time_ticks_are_round_and_inside_the_range() {
        let hour = 3_600_000;
        let start = 1_700_000_000_000 + 123_456;
        let ticks = time_ticks(start, start + hour, 8);
        assert!(ticks.len() <= 8 && ticks.len() >= 4, "{ticks:?}");
        assert!(ticks.iter().all(|t| t % (10 * 60_000) == 0));
        assert!(ticks.iter().all(|t| (start..=start + hour).contains(t)));
        let week = time_ticks(start, start + 7 * 86_400_000, 8);
        assert!(week.iter().all(|t| t % 86_400_000 == 0), "{week:?}");
        assert!(ticks_show_dates(start, start + 7 * 86_400_000));
        assert!(!ticks_show_dates(start, start + hour));
    }

    #[test]
    fn value_axes_end_on_nice_numbers() {
        assert_eq!(nice_max(0.0, 1.0), 1.0);
        assert_eq!(nice_max(3.2, 1.0), 5.0);
        assert_eq!(nice_max(13.0, 1.0), 20.0);
        assert_eq!(nice_max(51.0, 1.0), 100.0);
        assert_eq!(nice_max(1_400_000.0, 1.0), 2_000_000.0);
        assert_eq!(value_ticks(100.0), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
    }

    #[test]
    fn paths_break_at_gaps() {
        let s = scale();
        let pts = [
            (s.start, 0.0),
            (s.start + 60_000, 50.0),
            (s.start + 120_000, 100.0),
            (s.start + 1_800_000, 100.0),
        ];
        let gap = gap_for(&pts);
        assert_eq!(gap, 180_000);
        let d = line_path(&s, &pts, gap);
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 2, "{d}");
        assert!(d.starts_with("M40.0,176.0 L"), "{d}");
    }

    #[test]
    fn hover_finds_the_nearest_point() {
        let pts = [(10, 1.0), (20, 2.0), (40, 3.0)];
        assert_eq!(nearest(&pts, 0), Some(0));
        assert_eq!(nearest(&pts, 16), Some(1));
        assert_eq!(nearest(&pts, 31), Some(2));
        assert_eq!(nearest(&pts, 99), Some(2));
        assert_eq!(nearest(&[], 5), None);
    }
}
