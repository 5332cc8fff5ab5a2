//! Test tooling shared by the end-to-end tests in `it/` (and later `cargo xtask soak`).
//!
//! - `proxy`: a userspace TCP fault proxy (latency, throttle, blackhole, half-open, reset,
//!   seeded drop schedules, byte counters), because
//!   `tc netem` is not available on our machines.
//! - `webhook`: a webhook receiver that records deliveries and can be taken down.

pub mod proxy;
pub mod webhook;
