//! Web application firewall: runs ModSecurity rule sets (the OWASP Core Rule Set, unmodified)
//! per tenant with linear-time regexes.
//!
//! Owns the rule language (`seclang`), the compiled rule engine, operators (`operators`),
//! transformations (`transforms`) and request body parsing (`body`). It reads a request and
//! returns a verdict plus security events; it must not send responses, touch routing, limits
//! or the cache itself: the pipeline in `proxy` acts on the verdict.

pub mod body;
pub mod operators;
pub mod seclang;
pub mod transforms;
