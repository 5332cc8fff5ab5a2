//! Test tooling shared by the end-to-end tests in `it/` (and later `cargo xtask soak`).
//!
//! - `proxy`: a userspace TCP fault proxy (latency, throttle, blackhole, reset), because
//!   `tc netem` is not available on our machines.

pub mod proxy;
