//! The Leptos dashboard, compiled to WASM and served by the console.
//!
//! Not built yet: the dashboard issue fills this crate. It depends only on `edgefleet-codec`.
