//! cong: one gateway process in front of every web portal a province hosts.
//!
//! The library holds everything; `main.rs` only parses the command line. The request path is
//! `proxy` (one pipeline); each feature lives in its own module and plugs into it:
//! `routing` (host/path → tenant/pool), `upstream` (pools, health, DNS), `static_origin`,
//! `forwarded` (client address, forwarding headers), `pages` (error pages), `admin`,
//! `soc` (event shipping to the SOC and the local archive), `tls` (termination, SNI
//! certificates), `certs` (certificate store), `acme` (automatic certificates),
//! `config` (file format) and `gateway` (the runtime snapshot built from a config), with
//! `server` wiring them into pingora. `access` (operator rules), `geoip` and `limits` (rate
//! limits, bans, connection protection) guard the pipeline's first steps; `cache` (page
//! cache: policy, storage tiers, purge) answers from stored copies after them. `cluster`
//! (optional) shares certificates, ACME locks, limits, bans and purges between nodes through
//! Redis, plugged into those modules' hooks.

pub mod access;
pub mod acme;
pub mod admin;
pub mod availability;
pub mod cache;
pub mod calendar;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod events;
pub mod forwarded;
pub mod gateway;
pub mod geoip;
pub mod limits;
pub mod maintenance;
pub mod metrics;
pub mod online;
pub mod pages;
pub mod proxy;
pub mod redirects;
pub mod reload;
pub mod report;
pub mod routing;
pub mod server;
pub mod soc;
pub mod static_origin;
pub mod status_page;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod usage;
pub mod waf;
