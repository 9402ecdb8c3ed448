//! The TOML schema of the WAF: `[waf]` in the main file (rule files, body inspection bounds,
//! the default mode) and `[waf]` in a tenant file (mode, paranoia level, anomaly threshold,
//! exclusions, an extra rules file). Loading the rules and checking ids is `waf::Global::build`.

use super::Size;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use toml::Spanned;

/// `[waf]` in the main file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafConfig {
    /// Rule files loaded in order (relative to the main file). Default: the Core Rule Set as
    /// Debian's `modsecurity-crs` installs it.
    pub rules: Option<Vec<Spanned<String>>>,
    /// Mode of tenants that do not set one: `off`, `detect` or `block`. Default `off`.
    pub mode: Option<Spanned<String>>,
    /// Request body bytes inspected; the rest streams past uninspected. Default 128KB.
    pub inspect_body: Option<Spanned<Size>>,
    /// Arguments parsed from a query string or body at most. Default 1000.
    pub max_args: Option<Spanned<usize>>,
    /// JSON nesting inspected at most. Default 64.
    pub max_json_depth: Option<Spanned<usize>>,
    /// A request body longer than `inspect_body` that carries no file upload: `reject`
    /// (413, as ModSecurity's `SecRequestBodyLimitAction Reject`) or `partial` (inspect the
    /// first `inspect_body` bytes, stream the rest). Default `reject`.
    pub body_limit_action: Option<Spanned<String>>,
    /// Response body bytes inspected in phase 4 (tenants with `inspect_response`); a longer
    /// body is inspected up to here and streams on. Default 512KB.
    pub inspect_response_body: Option<Spanned<Size>>,
    /// Response media types whose body phase 4 inspects. Default `text/html`, `text/plain`,
    /// `text/xml`.
    pub response_body_types: Option<Vec<Spanned<String>>>,
}

/// `[waf]` in a tenant file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantWafConfig {
    pub mode: Option<Spanned<String>>,
    /// CRS paranoia level 1–4. Default 1.
    pub paranoia: Option<Spanned<u8>>,
    /// CRS inbound anomaly score threshold. Default 5.
    pub threshold: Option<Spanned<u32>>,
    /// Also run the response phases (3: status and headers, 4: body) for this tenant's
    /// responses: the CRS's data-leakage rules. Default false.
    pub inspect_response: Option<Spanned<bool>>,
    /// CRS outbound anomaly score threshold (phase 4). Default 4.
    pub response_threshold: Option<Spanned<u32>>,
    /// Rules switched off for this tenant: ids or ranges (`942100`, `"920000-920999"`).
    #[serde(default)]
    pub exclude_rules: Vec<Spanned<IdSpec>>,
    /// Rules switched off by tag (`attack-sqli`, `paranoia-level/2`).
    #[serde(default)]
    pub exclude_tags: Vec<Spanned<String>>,
    /// Exclusions that apply under a path, or to some variables only.
    #[serde(default)]
    pub exclusions: Vec<WafExclusionConfig>,
    /// Extra SecLang rules for this tenant, loaded after the main rule files (relative to
    /// the tenant file).
    pub rules_file: Option<Spanned<String>>,
}

/// `[[waf.exclusions]]`: `rules` (all when empty) off, or only their `targets`, for
/// requests under `path` (all paths when absent).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafExclusionConfig {
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub rules: Vec<Spanned<IdSpec>>,
    /// Variables the rules no longer inspect: `ARGS:content`, `REQUEST_COOKIES:/^sess/`.
    #[serde(default)]
    pub targets: Vec<Spanned<String>>,
}

/// A rule id or an inclusive range, written as a number or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdSpec(pub u64, pub u64);

impl<'de> Deserialize<'de> for IdSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IdSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rule id (942100) or a range (\"942100-942199\")")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdSpec, E> {
                u64::try_from(v)
                    .map(|v| IdSpec(v, v))
                    .map_err(|_| E::custom("a rule id cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdSpec, E> {
                let bad = || E::custom(format!("`{v}` is not a rule id or range (942100-942199)"));
                let (a, b) = v.split_once('-').unwrap_or((v, v));
                let a: u64 = a.trim().parse().map_err(|_| bad())?;
                let b: u64 = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                Ok(IdSpec(a, b))
            }
        }
        d.deserialize_any(V)
    }
}
