//! The TOML schema of HTTPS: `[tls]`, `[acme]`, `[[acme_ca]]`, `[[dns_update]]` in the main
//! file and the per-tenant TLS keys (fields of `TenantConfig`).

use super::Dur;
use serde::Deserialize;
use toml::Spanned;

/// `[tls]`: certificates served on TLS listeners.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate store directory, relative to the main file. Default `certs`.
    pub cert_dir: Option<Spanned<String>>,
    /// Certificate (chain, PEM) served when no other certificate matches the SNI.
    /// Default: a self-signed certificate generated at start.
    pub default_cert: Option<Spanned<String>>,
    pub default_key: Option<Spanned<String>>,
    /// Port written in HTTP → HTTPS redirects. Default 443.
    pub https_port: Option<u16>,
    /// How often operator certificate files are checked for changes. Default 10s.
    pub reload_interval: Option<Dur>,
    /// Days before expiry at which a `cert_expiring` warning is emitted. Default 14.
    pub expiry_warning_days: Option<u32>,
}

/// `[acme]`: how certificates are obtained and renewed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// Addresses this gateway is reachable at from the internet; a name whose A/AAAA records
    /// point elsewhere is not ordered (pre-flight check). Empty: the address check is skipped.
    #[serde(default)]
    pub public_addresses: Vec<Spanned<String>>,
    /// DNS server (`IP:PORT`) used by the pre-flight checks. Default: the system resolver.
    pub resolver: Option<Spanned<String>>,
    /// Run the pre-flight checks (resolution and CAA) before ordering.
    #[serde(default = "yes")]
    pub preflight: bool,
    /// How often the scheduler looks at every certificate.
    #[serde(default = "default_check_interval")]
    pub check_interval: Dur,
    /// Orders running at the same time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// First retry delay after a failure; doubled on every failure up to `retry_max`.
    #[serde(default = "default_retry_min")]
    pub retry_min: Dur,
    #[serde(default = "default_retry_max")]
    pub retry_max: Dur,
    /// How long one order may take (challenges, finalisation) before it counts as failed.
    #[serde(default = "default_order_timeout")]
    pub order_timeout: Dur,
    /// Renew when this fraction of the lifetime has passed (default 2/3).
    pub renew_fraction: Option<f64>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            public_addresses: Vec::new(),
            resolver: None,
            preflight: true,
            check_interval: default_check_interval(),
            concurrency: default_concurrency(),
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
            order_timeout: default_order_timeout(),
            renew_fraction: None,
        }
    }
}

/// `[[acme_ca]]`: one ACME certificate authority.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeCaConfig {
    /// Name used by tenants' `acme_ca` and in the store (letters, digits, `-`, `_`).
    pub name: Spanned<String>,
    /// Directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: Spanned<String>,
    /// Contact URIs (`mailto:soc@tinh.gov.vn`).
    #[serde(default)]
    pub contact: Vec<String>,
    /// External account binding: key id and base64url HMAC key, as given by the CA.
    pub eab_kid: Option<String>,
    pub eab_hmac_key: Option<Spanned<String>>,
    /// PEM file of the root that signs the CA's HTTPS endpoint, instead of the public roots.
    pub trust_root: Option<Spanned<String>>,
    /// Value expected in CAA records for this CA (`letsencrypt.org`). Without it CAA records
    /// are not checked for this CA.
    pub caa_identity: Option<String>,
}

/// `[[dns_update]]`: a zone whose TXT records cong may change (RFC 2136 + TSIG), for DNS-01.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsUpdateConfig {
    /// Zone apex, e.g. `tinh.gov.vn`.
    pub zone: Spanned<String>,
    /// Primary server `IP:PORT` receiving the updates.
    pub server: Spanned<String>,
    pub tsig_key_name: String,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    pub tsig_algorithm: Option<Spanned<String>>,
    /// Base64 secret, inline or in a file (first line).
    pub tsig_secret: Option<Spanned<String>>,
    pub tsig_secret_file: Option<Spanned<String>>,
    /// How long to wait after the update before asking the CA to validate.
    #[serde(default = "default_propagation")]
    pub propagation_delay: Dur,
}

fn yes() -> bool {
    true
}
fn default_check_interval() -> Dur {
    Dur::secs(3600)
}
fn default_concurrency() -> usize {
    4
}
fn default_retry_min() -> Dur {
    Dur::secs(60)
}
fn default_retry_max() -> Dur {
    Dur::secs(6 * 3600)
}
fn default_order_timeout() -> Dur {
    Dur::secs(300)
}
fn default_propagation() -> Dur {
    Dur::secs(0)
}
