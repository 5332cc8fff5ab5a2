//! End-to-end tests: one integration binary (matklad's "delete cargo integration tests").
//!
//! Every test starts its own console process (embedded broker, sled on disk) on free
//! loopback ports, real agents (processes or in-process with real MQTT), and waits on
//! conditions with deadlines, never fixed sleeps.

mod alerts;
mod artifacts;
mod cli;
mod commands;
mod external;
mod faults;
mod harness;
mod independent;
mod inventory;
mod mqtt;
mod presence;
mod rollouts;
mod security;
mod tls;
mod ui;
