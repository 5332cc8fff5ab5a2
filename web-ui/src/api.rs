//! Calls to the console's REST API with the API key from sessionStorage. Responses are
//! the `edgefleet_codec::api` types the console serializes; every failure becomes an
//! [`ApiError`] with a message fit to show.

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

const KEY_ITEM: &str = "edgefleet.api_key";

/// A failed call: the HTTP status (0 when the request never got an answer) and the
/// console's `{"error": ...}` message or a description of what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            0 => write!(f, "{}", self.message),
            s => write!(f, "{} (HTTP {s})", self.message),
        }
    }
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok()?
}

/// The API key of this browser tab, if logged in.
pub fn key() -> Option<String> {
    storage()?
        .get_item(KEY_ITEM)
        .ok()?
        .filter(|k| !k.is_empty())
}

pub fn set_key(key: Option<&str>) {
    if let Some(s) = storage() {
        let _ = match key {
            Some(k) => s.set_item(KEY_ITEM, k),
            None => s.remove_item(KEY_ITEM),
        };
    }
}

fn js_error(context: &str, e: JsValue) -> ApiError {
    let detail = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "no detail".into());
    ApiError {
        status: 0,
        message: format!("{context}: {detail}"),
    }
}

/// Sends a request and returns the raw response (any status).
pub async fn send(
    method: &str,
    path: &str,
    body: Option<String>,
    key: Option<&str>,
) -> Result<Response, ApiError> {
    let init = RequestInit::new();
    init.set_method(method);
    let headers = web_sys::Headers::new().map_err(|e| js_error("headers", e))?;
    if let Some(k) = key {
        headers
            .set("Authorization", &format!("Bearer {k}"))
            .map_err(|e| js_error("headers", e))?;
    }
    if let Some(b) = &body {
        headers
            .set("Content-Type", "application/json")
            .map_err(|e| js_error("headers", e))?;
        init.set_body(&JsValue::from_str(b));
    }
    init.set_headers(&headers);
    let request =
        Request::new_with_str_and_init(path, &init).map_err(|e| js_error("request", e))?;
    let window = web_sys::window().ok_or_else(|| ApiError {
        status: 0,
        message: "no window".into(),
    })?;
    let response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(|e| js_error("cannot reach the console", e))?;
    response
        .dyn_into::<Response>()
        .map_err(|e| js_error("fetch", e))
}

/// The body of a response as text.
pub async fn text(response: &Response) -> Result<String, ApiError> {
    let promise = response.text().map_err(|e| js_error("reading", e))?;
    let value = JsFuture::from(promise)
        .await
        .map_err(|e| js_error("reading the answer", e))?;
    Ok(value.as_string().unwrap_or_default())
}

/// One call with the stored key; 2xx bodies are parsed as `T`, the rest become errors.
pub async fn call<T: DeserializeOwned>(
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<T, ApiError> {
    let key = key();
    let response = send(method, path, body, key.as_deref()).await?;
    let status = response.status();
    let body = text(&response).await?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<edgefleet_codec::api::ApiErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| {
                let t = body.trim();
                if t.is_empty() {
                    response.status_text()
                } else {
                    t.chars().take(200).collect()
                }
            });
        return Err(ApiError { status, message });
    }
    let body = if body.is_empty() { "null" } else { &body };
    serde_json::from_str(body).map_err(|e| ApiError {
        status,
        message: format!("unexpected answer from {path}: {e}"),
    })
}

pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    call("GET", path, None).await
}

pub async fn post<T: DeserializeOwned>(path: &str, body: &impl Serialize) -> Result<T, ApiError> {
    let body = serde_json::to_string(body).expect("request types serialize");
    call("POST", path, Some(body)).await
}

pub async fn put<T: DeserializeOwned>(path: &str, body: &impl Serialize) -> Result<T, ApiError> {
    let body = serde_json::to_string(body).expect("request types serialize");
    call("PUT", path, Some(body)).await
}

/// A DELETE; the console answers 204 with no body.
pub async fn delete(path: &str) -> Result<(), ApiError> {
    call::<serde::de::IgnoredAny>("DELETE", path, None)
        .await
        .map(drop)
}

/// Milliseconds since the epoch, from the browser clock.
pub fn now() -> u64 {
    js_sys::Date::now() as u64
}

/// Resolves after `ms` milliseconds.
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(promise).await;
}
