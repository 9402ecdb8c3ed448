//! Reading a PEM certificate chain and private key into a rustls `CertifiedKey`, with the
//! checks an operator needs named: unreadable or corrupt file, no certificate, no key, key not
//! matching the certificate, certificate expired.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a certificate says about itself (for selection, listing and scheduling).
#[derive(Debug, Clone, Default)]
pub struct CertInfo {
    /// DNS names of the subject alternative name extension (lower case).
    pub names: Vec<String>,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<CertInfo, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push(d.to_ascii_lowercase());
                }
            }
        }
        Ok(CertInfo {
            names,
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    pub fn expired(&self) -> bool {
        now_unix() >= self.not_after
    }

    pub fn days_left(&self) -> i64 {
        (self.not_after - now_unix()).div_euclid(86400)
    }
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}: cannot read: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: corrupt PEM: {1}")]
    Corrupt(String, String),
    #[error("{0}: no certificate in the file")]
    NoCert(String),
    #[error("{0}: no private key in the file")]
    NoKey(String),
    #[error("{0}: unsupported private key: {1}")]
    BadKey(String, String),
    #[error("{0}: the private key does not match the certificate")]
    Mismatch(String),
    #[error("{0}: certificate expired at {1} (unix time)")]
    Expired(String, i64),
}

impl CertError {
    /// The file (or label) the error is about.
    pub fn file(&self) -> &str {
        match self {
            CertError::Read(f, _)
            | CertError::Corrupt(f, _)
            | CertError::NoCert(f)
            | CertError::NoKey(f)
            | CertError::BadKey(f, _)
            | CertError::Mismatch(f)
            | CertError::Expired(f, _) => f,
        }
    }
}

/// Reads and checks a chain file and a key file.
pub fn load_pair(cert: &Path, key: &Path) -> Result<(Arc<CertifiedKey>, CertInfo), CertError> {
    let c = std::fs::read(cert).map_err(|e| CertError::Read(cert.display().to_string(), e))?;
    let k = std::fs::read(key).map_err(|e| CertError::Read(key.display().to_string(), e))?;
    parse_pair_files(
        &c,
        &cert.display().to_string(),
        &k,
        &key.display().to_string(),
    )
}

/// Checks a chain and key given as PEM text (`label` names them in errors).
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    label: &str,
) -> Result<(Arc<CertifiedKey>, CertInfo), CertError> {
    parse_pair_files(cert_pem, label, key_pem, label)
}

fn parse_pair_files(
    cert_pem: &[u8],
    cert_label: &str,
    key_pem: &[u8],
    key_label: &str,
) -> Result<(Arc<CertifiedKey>, CertInfo), CertError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Corrupt(cert_label.into(), e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCert(cert_label.into()));
    };
    let info = CertInfo::from_der(leaf).map_err(|e| CertError::Corrupt(cert_label.into(), e))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| CertError::Corrupt(key_label.into(), e.to_string()))?
        .ok_or_else(|| CertError::NoKey(key_label.into()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| CertError::BadKey(key_label.into(), e.to_string()))?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(CertError::Mismatch(key_label.into())),
    }
    if info.expired() {
        return Err(CertError::Expired(cert_label.into(), info.not_after));
    }
    Ok((Arc::new(ck), info))
}
