//! TLS: `edgefleet-console init-tls` (a self-signed CA and a server certificate for
//! first-time setups and tests, so MQTT over TLS and HTTPS work without an existing PKI),
//! and the HTTPS listener for the REST API and UI ([`serve_https`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// The files `init_tls` writes.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Creates `ca.pem`/`ca.key` and `server.pem`/`server.key` (valid for `names`) in `dir`.
/// Private keys are written with mode 0600. Existing files are not overwritten.
pub fn init_tls(dir: &Path, names: &[String]) -> Result<TlsFiles> {
    let files = TlsFiles {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    for path in [
        &files.ca_cert,
        &files.ca_key,
        &files.server_cert,
        &files.server_key,
    ] {
        anyhow::ensure!(
            !path.exists(),
            "{} already exists; remove it or choose another --out",
            path.display()
        );
    }
    anyhow::ensure!(
        !names.is_empty(),
        "init-tls needs at least one --name for the server certificate"
    );

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "EdgeFleet console CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?).context("creating the CA")?;

    let mut server_params = CertificateParams::new(names.to_vec()).context("server names")?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    let server_key = KeyPair::generate()?;
    let server = server_params
        .signed_by(&server_key, &ca)
        .context("signing the server certificate")?;

    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    edgefleet_config::keyfile::write_secret(&files.ca_key, ca.key().serialize_pem().as_bytes())?;
    edgefleet_config::keyfile::write_secret(
        &files.server_key,
        server_key.serialize_pem().as_bytes(),
    )?;
    std::fs::write(&files.ca_cert, ca.pem())
        .with_context(|| format!("writing {}", files.ca_cert.display()))?;
    std::fs::write(&files.server_cert, server.pem())
        .with_context(|| format!("writing {}", files.server_cert.display()))?;
    Ok(files)
}

/// A rustls server configuration from PEM files. Errors name the file and what is wrong.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading certificates from {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", cert.display());
    }
    edgefleet_config::keyfile::read_secret(key)
        .with_context(|| format!("checking the key file {}", key.display()))?;
    let key_der = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))
    .with_context(|| format!("reading the private key from {}", key.display()))?
    .with_context(|| format!("{} holds no PEM private key", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "{} and {} do not make a usable certificate and key pair",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `app` over HTTPS until `shutdown`. A failed handshake is logged at debug level
/// and costs nothing else; a handshake has 10 s.
pub async fn serve_https(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: rustls::ServerConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    use tower::ServiceExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tracker.spawn(async move {
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    app.clone().oneshot(req)
                },
            );
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(client = %peer, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
    tracker.close();
    // In-flight requests get a moment to finish, as axum's graceful shutdown gives them.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait()).await;
    Ok(())
}
