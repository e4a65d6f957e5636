//! The emulator's TLS identity: a fresh CA per instance and a server certificate for
//! 127.0.0.1 signed by it, so that clients verify the server exactly as they would a real one.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the TLS identity could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused to generate a key or certificate.
    #[error("generating the {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the generated certificate.
    #[error("building the TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A CA and the server configuration whose certificate it signed.
pub struct Identity {
    /// PEM of the CA certificate, for `certificate-authority-data`.
    pub ca_pem: String,
    /// The rustls configuration the listener serves with.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

fn make<T>(what: &'static str, r: Result<T, rcgen::Error>) -> Result<T, TlsError> {
    r.map_err(|source| TlsError::Generate { what, source })
}

/// Generates a CA and a server certificate valid for `127.0.0.1` and `localhost`.
pub fn generate() -> Result<Identity, TlsError> {
    let ca_key = make("CA key", KeyPair::generate())?;
    let mut ca_params = make(
        "CA parameters",
        CertificateParams::new(Vec::<String>::new()),
    )?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "testcluster-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = make(
        "CA certificate",
        CertifiedIssuer::self_signed(ca_params, ca_key),
    )?;

    let server_key = make("server key", KeyPair::generate())?;
    let mut params = make(
        "server parameters",
        CertificateParams::new(vec!["localhost".to_string()]),
    )?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let server_cert = make("server certificate", params.signed_by(&server_key, &ca))?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone(), ca.der().clone()], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Identity {
        ca_pem: ca.pem(),
        server_config: Arc::new(config),
    })
}
