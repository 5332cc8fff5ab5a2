//! `cargo xtask ui`: the web UI build.
//!
//! 1. `cargo build --profile wasm-release --target wasm32-unknown-unknown -p edgefleet-web-ui`
//! 2. JS glue with `wasm-bindgen-cli-support` (the same version as the `wasm-bindgen` crate
//!    in Cargo.lock, which the glue generator requires).
//! 3. Every asset named by a hash of its content, `index.html` filled in from
//!    `web-ui/index.html`, and gzip and brotli copies of each file, so the console can
//!    serve hashed assets as immutable and pick a precompressed body without compressing
//!    per request.
//!
//! The profile keeps the wasm unstripped because wasm-bindgen reads its `target_features`
//! section; the custom sections (over half the file is the `name` section) are dropped
//! after wasm-bindgen instead.
//!
//! The result is written to `web-ui/dist.tmp` and renamed to `web-ui/dist`, so a running
//! console never serves half a build.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub fn build(root: &Path) -> Result<()> {
    let started = Instant::now();
    super::ensure_wasm_target()?;
    super::run(super::cargo().args([
        "build",
        "--locked",
        "--profile",
        "wasm-release",
        "--target",
        "wasm32-unknown-unknown",
        "-p",
        "edgefleet-web-ui",
    ]))?;
    let wasm_in =
        target_dir(root).join("wasm32-unknown-unknown/wasm-release/edgefleet_web_ui.wasm");
    let web = root.join("web-ui");
    let glue = web.join("dist.glue");
    let _ = std::fs::remove_dir_all(&glue);
    eprintln!("xtask: wasm-bindgen --target web {}", wasm_in.display());
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm_in)
        .web(true)?
        .typescript(false)
        .out_name("edgefleet")
        .generate(&glue)
        .map_err(|e| anyhow::anyhow!("wasm-bindgen: {e:#}"))?;

    let tmp = web.join("dist.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("assets"))?;
    let js = asset(&tmp, "edgefleet", "js", &read(&glue.join("edgefleet.js"))?)?;
    let wasm_bytes = strip_custom_sections(&read(&glue.join("edgefleet_bg.wasm"))?)?;
    let wasm = asset(&tmp, "edgefleet", "wasm", &wasm_bytes)?;
    let css = asset(&tmp, "style", "css", &read(&web.join("style.css"))?)?;
    let template = String::from_utf8(read(&web.join("index.html"))?)?;
    for placeholder in ["{{js}}", "{{wasm}}", "{{css}}"] {
        if !template.contains(placeholder) {
            bail!("web-ui/index.html lacks {placeholder}");
        }
    }
    let index = template
        .replace("{{js}}", &js)
        .replace("{{wasm}}", &wasm)
        .replace("{{css}}", &css);
    write_with_compressed(&tmp.join("index.html"), index.as_bytes())?;
    let _ = std::fs::remove_dir_all(&glue);

    let dist = web.join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::rename(&tmp, &dist)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dist.display()))?;
    let size = |name: &str| std::fs::metadata(dist.join("assets").join(name)).map(|m| m.len());
    println!(
        "xtask ui: built {} in {:.0?}: wasm {} bytes, {} gzipped, {} brotli",
        dist.display(),
        started.elapsed(),
        wasm_bytes.len(),
        size(&format!("{wasm}.gz"))?,
        size(&format!("{wasm}.br"))?,
    );
    Ok(())
}

fn target_dir(root: &Path) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| root.join("target"))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `assets/{stem}-{hash}.{ext}` (and its compressed copies); returns the file name.
fn asset(dist: &Path, stem: &str, ext: &str, bytes: &[u8]) -> Result<String> {
    let digest = Sha256::digest(bytes);
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("{stem}-{hash}.{ext}");
    write_with_compressed(&dist.join("assets").join(&name), bytes)?;
    Ok(name)
}

fn write_with_compressed(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes)?;
    std::fs::write(append_ext(path, "gz"), gz.finish()?)?;
    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 11, 22);
        w.write_all(bytes)?;
    }
    std::fs::write(append_ext(path, "br"), br)?;
    Ok(())
}

fn append_ext(path: &Path, ext: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    s.into()
}

/// The module without its custom sections (id 0: names, producers, target features,
/// debug info), which the browser does not need.
fn strip_custom_sections(wasm: &[u8]) -> Result<Vec<u8>> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        bail!("not a wasm module");
    }
    let mut out = wasm[..8].to_vec();
    let mut i = 8;
    while i < wasm.len() {
        let start = i;
        let id = wasm[i];
        i += 1;
        let (mut size, mut shift) = (0usize, 0);
        loop {
            let byte = *wasm.get(i).context("truncated section size")?;
            i += 1;
            size |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                break;
            }
        }
        let end = i.checked_add(size).filter(|e| *e <= wasm.len());
        let end = end.context("section runs past the end")?;
        if id != 0 {
            out.extend_from_slice(&wasm[start..end]);
        }
        i = end;
    }
    Ok(out)
}
