//! The web UI: the files `cargo xtask ui` builds into `web-ui/dist`, served at `/` with an
//! SPA fallback, and the demo login.
//!
//! The console reads the directory on each request rather than embedding it, so the UI
//! can be rebuilt without rebuilding or restarting the console, and a console built
//! before the UI still explains how to build it instead of answering 404. Hashed assets
//! (`/assets/<name>-<hash>.<ext>`) are immutable; `index.html` is `no-cache`. `xtask ui`
//! writes `.br` and `.gz` copies next to each file, so compression costs nothing per
//! request.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use crate::fleet::Fleet;
use crate::http::ApiError;

/// Where the UI is and whether the demo login is on.
#[derive(Debug, Clone)]
pub struct Ui {
    /// The built UI: `index.html` and `assets/`.
    pub dir: PathBuf,
    /// In demo mode, the admin key file the demo login hands out (to loopback peers only).
    pub demo_key: Option<PathBuf>,
}

impl Ui {
    /// `EDGEFLEET_UI_DIR`, else `ui/` next to the executable (an installed console), else
    /// `web-ui/dist` of the workspace the executable was built in, else `./web-ui/dist`.
    pub fn discover(demo_key: Option<PathBuf>) -> Ui {
        Ui {
            dir: find_dir(),
            demo_key,
        }
    }
}

fn find_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDGEFLEET_UI_DIR") {
        return dir.into();
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(bin_dir) = exe.parent() {
            let installed = bin_dir.join("ui");
            if installed.join("index.html").is_file() {
                return installed;
            }
            for dir in bin_dir.ancestors().take(5) {
                if dir.join("web-ui/Cargo.toml").is_file() {
                    return dir.join("web-ui/dist");
                }
            }
        }
    }
    PathBuf::from("web-ui/dist")
}

/// `/` and `POST /demo/login`; [`fallback`] serves assets and client routes.
pub fn routes() -> Router<Arc<Fleet>> {
    Router::new()
        .route("/", get(index))
        .route("/demo/login", post(demo_login))
}

type UiExt = Option<Extension<Arc<Ui>>>;
type Peer = Option<ConnectInfo<SocketAddr>>;

fn ui_of(ext: UiExt) -> Arc<Ui> {
    ext.map(|Extension(ui)| ui)
        .unwrap_or_else(|| Arc::new(Ui::discover(None)))
}

async fn index(ext: UiExt, peer: Peer, headers: HeaderMap) -> Response {
    serve_index(&ui_of(ext), peer, &headers).await
}

/// Everything no route matched: `/api/*` gets the API's JSON 404, `/assets/*` a file, and
/// any other GET without a file extension the UI's `index.html` (a client route such as
/// `/hosts/{id}`).
pub async fn fallback(
    ext: UiExt,
    peer: Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return ApiError::NotFound("no such route; see docs/api.md".into()).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::NotFound("no such route; see docs/api.md".into()).into_response();
    }
    let ui = ui_of(ext);
    if let Some(name) = path.strip_prefix("/assets/") {
        return serve_asset(&ui.dir, name, &headers).await;
    }
    let last = path.rsplit('/').next().unwrap_or("");
    if last.contains('.') {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    serve_index(&ui, peer, &headers).await
}

fn is_loopback(peer: &Peer) -> bool {
    peer.as_ref()
        .is_some_and(|ConnectInfo(addr)| addr.ip().is_loopback())
}

/// The browser asked for a loopback name. Checked for the demo login so that a web page
/// whose DNS name was rebound to 127.0.0.1 cannot read the key.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn demo_allowed(ui: &Ui, peer: &Peer, headers: &HeaderMap) -> bool {
    ui.demo_key.is_some() && is_loopback(peer) && loopback_host(headers)
}

async fn serve_index(ui: &Ui, peer: Peer, headers: &HeaderMap) -> Response {
    let path = ui.dir.join("index.html");
    let Ok(html) = tokio::fs::read_to_string(&path).await else {
        return not_built(&ui.dir);
    };
    let no_cache = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
    ];
    if demo_allowed(ui, &peer, headers) {
        // The login page shows "Log in to the demo" only when this marker is present.
        let html = html.replacen(
            "</head>",
            "<meta name=\"edgefleet-demo\" content=\"1\">\n</head>",
            1,
        );
        return (no_cache, html).into_response();
    }
    match precompressed(&path, headers).await {
        Some((bytes, encoding)) => (
            no_cache,
            [
                (header::CONTENT_ENCODING, HeaderValue::from_static(encoding)),
                (header::VARY, HeaderValue::from_static("accept-encoding")),
            ],
            bytes,
        )
            .into_response(),
        None => (no_cache, html).into_response(),
    }
}

fn not_built(dir: &Path) -> Response {
    let dir = dir.display().to_string();
    let dir = dir
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(format!(
            "<!doctype html><meta charset=utf-8><title>EdgeFleet</title>\
             <h1>EdgeFleet console</h1>\
             <p>The web UI is not built. Build it with <code>cargo xtask ui</code> (or start \
             everything with <code>cargo xtask demo</code>) and reload this page; the console \
             needs no restart.</p>\
             <p>The console looks for it in <code>{dir}</code> (set <code>EDGEFLEET_UI_DIR</code> \
             to serve it from elsewhere).</p>\
             <p>The REST API works without it, behind an API key (<code>Authorization: Bearer \
             ...</code>; the first admin key is in <code>&lt;data_dir&gt;/admin.key</code>). Open \
             without a key: <a href=/metrics>/metrics</a>, <a href=/healthz>/healthz</a>.</p>"
        )),
    )
        .into_response()
}

/// The `.br` or `.gz` copy of `path` the client accepts, if there is one.
async fn precompressed(path: &Path, headers: &HeaderMap) -> Option<(Vec<u8>, &'static str)> {
    let accepted = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let accepts = |coding: &str| {
        accepted.split(',').any(|part| {
            let mut it = part.split(';');
            let name = it.next().unwrap_or("").trim();
            let refused = it.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    == Some(0.0)
            });
            name.eq_ignore_ascii_case(coding) && !refused
        })
    };
    for (coding, ext) in [("br", "br"), ("gzip", "gz")] {
        if accepts(coding) {
            let mut p = path.as_os_str().to_owned();
            p.push(".");
            p.push(ext);
            if let Ok(bytes) = tokio::fs::read(PathBuf::from(p)).await {
                return Some((bytes, coding));
            }
        }
    }
    None
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "js" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

async fn serve_asset(dir: &Path, name: &str, headers: &HeaderMap) -> Response {
    // Assets are flat and named by the build; anything else (`..`, slashes, dot files)
    // is not one of ours.
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !name.ends_with(".gz")
        && !name.ends_with(".br");
    if !valid {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let path = dir.join("assets").join(name);
    let immutable = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(name)),
        ),
        (header::VARY, HeaderValue::from_static("accept-encoding")),
    ];
    if let Some((bytes, encoding)) = precompressed(&path, headers).await {
        return (
            immutable,
            [(header::CONTENT_ENCODING, HeaderValue::from_static(encoding))],
            bytes,
        )
            .into_response();
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => (immutable, bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

#[derive(Debug, serde::Serialize)]
struct DemoLogin {
    key: String,
}

/// The admin key, for the demo's "Log in to the demo" link: only in demo mode, only to a
/// loopback peer that asked for a loopback host name.
async fn demo_login(ext: UiExt, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    let ui = ui_of(ext);
    if !demo_allowed(&ui, &peer, &headers) {
        return Err(ApiError::NotFound(
            "the demo login exists only in demo mode (--demo), from this machine".into(),
        ));
    }
    let path = ui.demo_key.clone().expect("demo_allowed checked it");
    let bytes = edgefleet_config::keyfile::read_secret(&path)
        .map_err(|e| ApiError::Internal(format!("reading {}: {e:#}", path.display())))?;
    let key = String::from_utf8_lossy(&bytes).trim().to_string();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(DemoLogin { key }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn demo_login_needs_demo_mode_a_loopback_peer_and_a_loopback_host() {
        let demo = Ui {
            dir: "x".into(),
            demo_key: Some("k".into()),
        };
        let off = Ui {
            demo_key: None,
            ..demo.clone()
        };
        let local: Peer = Some(ConnectInfo(([127, 0, 0, 1], 5000).into()));
        let remote: Peer = Some(ConnectInfo(([10, 0, 0, 2], 5000).into()));
        let host = headers(&[("host", "127.0.0.1:8080")]);
        assert!(demo_allowed(&demo, &local, &host));
        assert!(demo_allowed(
            &demo,
            &local,
            &headers(&[("host", "localhost")])
        ));
        assert!(demo_allowed(
            &demo,
            &local,
            &headers(&[("host", "[::1]:80")])
        ));
        assert!(!demo_allowed(&off, &local, &host));
        assert!(!demo_allowed(&demo, &remote, &host));
        assert!(!demo_allowed(&demo, &None, &host));
        assert!(!demo_allowed(
            &demo,
            &local,
            &headers(&[("host", "evil.example:8080")])
        ));
        assert!(!demo_allowed(&demo, &local, &HeaderMap::new()));
    }

    #[tokio::test]
    async fn assets_are_served_precompressed_with_types_and_cache_headers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/app-1234.wasm"), b"raw").unwrap();
        std::fs::write(dir.path().join("assets/app-1234.wasm.gz"), b"gz").unwrap();
        std::fs::write(dir.path().join("assets/app-1234.wasm.br"), b"br").unwrap();
        let get = |accept: &'static str, name: &'static str| {
            let dir = dir.path().to_path_buf();
            async move {
                let r = serve_asset(&dir, name, &headers(&[("accept-encoding", accept)])).await;
                let status = r.status();
                let h = r.headers().clone();
                let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
                (status, h, body)
            }
        };
        let (status, h, body) = get("gzip, deflate, br", "app-1234.wasm").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"br");
        assert_eq!(h["content-encoding"], "br");
        assert_eq!(h["content-type"], "application/wasm");
        assert!(h["cache-control"].to_str().unwrap().contains("immutable"));
        let (_, h, body) = get("gzip, br;q=0", "app-1234.wasm").await;
        assert_eq!(&body[..], b"gz");
        assert_eq!(h["content-encoding"], "gzip");
        let (_, h, body) = get("identity", "app-1234.wasm").await;
        assert_eq!(&body[..], b"raw");
        assert!(h.get("content-encoding").is_none());
        for bad in ["../secret", "..", ".hidden", "app-1234.wasm.gz", "a/b", ""] {
            assert_eq!(get("", bad).await.0, StatusCode::NOT_FOUND, "{bad}");
        }
    }

    #[tokio::test]
    async fn client_routes_get_index_html_and_a_missing_build_explains_itself() {
        let dir = tempfile::tempdir().unwrap();
        let ui = Ui {
            dir: dir.path().to_path_buf(),
            demo_key: None,
        };
        let page = |ui: Ui, path: &'static str| async move {
            let r = fallback(
                Some(Extension(Arc::new(ui))),
                None,
                Method::GET,
                Uri::from_static(path),
                HeaderMap::new(),
            )
            .await;
            let status = r.status();
            let cache = r.headers().get("cache-control").cloned();
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            (status, cache, String::from_utf8_lossy(&body).into_owned())
        };
        let (status, _, body) = page(ui.clone(), "/hosts/abc").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("cargo xtask ui"), "{body}");
        std::fs::write(
            dir.path().join("index.html"),
            "<html><head></head>app</html>",
        )
        .unwrap();
        let (status, cache, body) = page(ui.clone(), "/hosts/abc?tab=apps").await;
        assert_eq!((status, body.contains("app")), (StatusCode::OK, true));
        assert_eq!(cache.unwrap(), "no-cache");
        assert!(!body.contains("edgefleet-demo"));
        let (status, _, body) = page(ui.clone(), "/api/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no such route"), "{body}");
        assert_eq!(page(ui, "/favicon.ico").await.0, StatusCode::NOT_FOUND);
    }
}
