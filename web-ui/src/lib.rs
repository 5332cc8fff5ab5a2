//! The EdgeFleet dashboard: a Leptos CSR app compiled to WASM and served by the console.
//!
//! Pure logic builds for every target and is unit-tested natively:
//! - `format`: numbers, percentages, rates and times as the tables show them.
//! - `query`: page state in the URL query string, and the API paths it asks for.
//! - `chart`: scales, ticks and SVG paths of the metric charts.
//! - `rollout`: a staged rollout's progress, overall and per wave.
//!
//! The views exist only in the wasm32 build (`cargo xtask ui`):
//! - `api`: fetch with the API key, typed with `edgefleet_codec::api`, errors as text.
//! - `live`: the `/api/events` stream read with fetch + ReadableStream.
//! - `route`: the client-side router (history API, links, URL query).
//! - `app`: the shell (login, navigation) and the pages under `pages/`.

pub mod chart;
pub mod format;
pub mod query;
pub mod rollout;

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod live;
#[cfg(target_arch = "wasm32")]
mod pages;
#[cfg(target_arch = "wasm32")]
mod route;

/// The wasm entry point: called by the generated JS glue once the module is loaded.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
