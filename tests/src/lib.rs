//! Test tooling shared by the end-to-end tests in `it/` (and later `cargo xtask soak`).
//!
//! - `proxy`: a userspace TCP fault proxy (latency, throttle, blackhole, half-open, reset,
//!   seeded drop schedules, byte counters), because
//!   `tc netem` is not available on our machines.
//! - `rawmqtt`: MQTT 3.1.1 packets written by hand, for the hostile ones libraries refuse.
//! - `webhook`: a webhook receiver that records deliveries and can be taken down.

pub mod proxy;
pub mod rawmqtt;
pub mod webhook;
