//! The live event stream. `/api/events` is Server-Sent Events behind the API key header,
//! which `EventSource` cannot send, so it is read with `fetch` and a `ReadableStream`.
//! Pages watch the signals here and refresh; when the stream is down they poll instead
//! (`connected` is false), and it is retried with `Last-Event-ID` so nothing is missed.

use edgefleet_codec::api::{CommandView, LiveBody, LiveEvent};
use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::api;

/// What pages react to.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    pub connected: RwSignal<bool>,
    /// Bumped on every presence or approval change (and on a `reset`).
    pub status: RwSignal<u64>,
    /// The host of the latest presence change (`None` after a `reset`: all of them).
    pub status_agent: RwSignal<Option<String>>,
    /// Bumped on every audit entry (and on a `reset`).
    pub audit: RwSignal<u64>,
    /// Bumped on every alert firing or resolving (and on a `reset`).
    pub alerts: RwSignal<u64>,
    /// The latest command change.
    pub command: RwSignal<Option<CommandView>>,
}

impl Live {
    pub fn install() -> Live {
        let live = Live {
            connected: RwSignal::new(false),
            status: RwSignal::new(0),
            status_agent: RwSignal::new(None),
            audit: RwSignal::new(0),
            alerts: RwSignal::new(0),
            command: RwSignal::new(None),
        };
        provide_context(live);
        leptos::task::spawn_local(run(live));
        live
    }

    fn dispatch(&self, event: LiveEvent) {
        match event.body {
            LiveBody::Status { agent, .. } => {
                self.status_agent.set(Some(agent));
                self.status.update(|n| *n += 1);
            }
            LiveBody::Audit { .. } => self.audit.update(|n| *n += 1),
            LiveBody::Command { command } => self.command.set(Some(command)),
            LiveBody::Alert { .. } => self.alerts.update(|n| *n += 1),
            LiveBody::Reset => {
                self.status_agent.set(None);
                self.status.update(|n| *n += 1);
                self.audit.update(|n| *n += 1);
                self.alerts.update(|n| *n += 1);
            }
            LiveBody::Vitals { .. } => {}
        }
    }
}

pub fn use_live() -> Live {
    expect_context::<Live>()
}

async fn run(live: Live) {
    let mut last_id: Option<u64> = None;
    loop {
        let Some(key) = api::key() else {
            // Not logged in yet: look again soon, so the stream starts right after login.
            api::sleep(500).await;
            continue;
        };
        if let Err(e) = stream(live, &key, &mut last_id).await {
            leptos::logging::warn!("live events: {e}; polling until it is back");
        }
        live.connected.set(false);
        api::sleep(3000).await;
    }
}

fn err(context: &str, e: JsValue) -> String {
    format!("{context}: {e:?}")
}

async fn stream(live: Live, key: &str, last_id: &mut Option<u64>) -> Result<(), String> {
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    let headers = web_sys::Headers::new().map_err(|e| err("headers", e))?;
    headers
        .set("Authorization", &format!("Bearer {key}"))
        .map_err(|e| err("headers", e))?;
    if let Some(id) = last_id {
        headers
            .set("Last-Event-ID", &id.to_string())
            .map_err(|e| err("headers", e))?;
    }
    init.set_headers(&headers);
    let request = web_sys::Request::new_with_str_and_init("/api/events", &init)
        .map_err(|e| err("request", e))?;
    let response: web_sys::Response = JsFuture::from(window().fetch_with_request(&request))
        .await
        .map_err(|e| err("fetch", e))?
        .unchecked_into();
    if !response.ok() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = response.body().ok_or("no body")?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    live.connected.set(true);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| err("read", e))?;
        let done = js_sys::Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true);
        if done {
            return Err("the console closed the stream".into());
        }
        let value = js_sys::Reflect::get(&chunk, &"value".into()).map_err(|e| err("read", e))?;
        buf.extend(js_sys::Uint8Array::new(&value).to_vec());
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let (mut name, mut data, mut id) = ("", String::new(), None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<u64>().ok();
                }
            }
            if id.is_some() {
                *last_id = id;
            }
            // A large fleet sends many vitals; nothing here needs them, so they are not
            // even parsed.
            if name == "vitals" || data.is_empty() {
                continue;
            }
            match serde_json::from_str::<LiveEvent>(&data) {
                Ok(event) => live.dispatch(event),
                Err(e) => leptos::logging::warn!("live events: cannot read {name}: {e}"),
            }
        }
    }
}
