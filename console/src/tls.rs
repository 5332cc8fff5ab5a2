//! `edgefleet-console init-tls`: a self-signed CA and a server certificate for first-time
//! setups and tests, so MQTT over TLS works without an existing PKI.

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
