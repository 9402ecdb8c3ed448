//! Web application firewall: ModSecurity rule sets (the OWASP Core Rule Set, unmodified) with
//! linear-time regexes.
//!
//! Owns the rule language (`seclang`: loading and checking rule files), operators
//! (`operators`), transformations (`transforms`) and request body parsing (`body`); the
//! compiled rule engine and its per-tenant use in the pipeline build on these. It must not
//! send responses, touch routing, limits or the cache itself: the pipeline in `proxy` acts on
//! its verdicts.

pub mod body;
pub mod operators;
pub mod rules;
pub mod seclang;
pub mod transaction;
pub mod transforms;
