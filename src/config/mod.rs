//! Configuration: the TOML model, loading and validation.
//!
//! Owns the on-disk format: one global file (`cong.toml`) plus one file per tenant in a
//! directory (`tenants.d/*.toml`), and the default configuration compiled into the binary.
//! Every error names the file, line, column and key. This module only parses and validates;
//! it builds no runtime state (that is `gateway::Snapshot::build`) and must not touch sockets.

mod access;
mod cache;
mod cluster;
mod duration;
mod error;
mod model;
pub mod scaffold;
mod soc;
mod tls;
mod waf;

pub use access::*;
pub use cache::*;
pub use cluster::*;
pub use duration::Dur;
pub use error::{ConfigError, Located};
pub use model::*;
pub use soc::*;
pub use tls::*;
pub use waf::*;

use std::path::{Path, PathBuf};

/// The configuration used when `cong run` finds no config file: HTTP on 8080 (IPv4 and IPv6),
/// admin on 127.0.0.1:9900, and two demo tenants served by the built-in static origin.
pub const DEFAULT_MAIN: &str = include_str!("default/cong.toml");
const DEFAULT_TENANTS: &[(&str, &str)] = &[
    (
        "<built-in>/tenants.d/demo.toml",
        include_str!("default/demo.toml"),
    ),
    (
        "<built-in>/tenants.d/demo-en.toml",
        include_str!("default/demo-en.toml"),
    ),
];

/// A source file kept with its text so later validation can point into it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

impl SourceFile {
    /// Line and column (both 1-based) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// An error located at a span of this file.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> ConfigError {
        let (line, col) = self.line_col(span.start);
        ConfigError::Located(Box::new(Located {
            file: self.path.clone(),
            line,
            col,
            key: key.into(),
            msg: msg.into(),
        }))
    }

    pub(crate) fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let key = key_at(&self.text, span.clone());
            self.error_at(span, key, e.message().trim().to_string())
        })
    }
}

/// The dotted key an error at `span` is about: the key itself for "unknown field" errors,
/// or the key whose value is at `span`, prefixed with the enclosing `[table]`.
fn key_at(text: &str, span: std::ops::Range<usize>) -> String {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[start..]
        .find('\n')
        .map(|i| start + i)
        .unwrap_or(text.len());
    let prefix = &text[line_start..start];
    let after = text.get(span.end.min(line_end)..line_end).unwrap_or("");
    let spanned = text.get(span.clone()).unwrap_or("").trim();
    let local = if let Some((k, _)) = prefix.split_once('=') {
        k.trim().to_string()
    } else if after.trim_start().starts_with('=') && !spanned.is_empty() {
        spanned.to_string()
    } else {
        // A value on a later line of a multi-line array: the key is on the line that opened it.
        text[..line_start]
            .lines()
            .rev()
            .find_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
            .unwrap_or_default()
    };
    let local = local.trim_matches('"').to_string();
    if local.is_empty() || local.starts_with('[') {
        return String::new();
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default();
    if table.is_empty() {
        local
    } else {
        format!("{table}.{local}")
    }
}

/// A tenant as read from its file, with the file kept for locating later errors.
#[derive(Debug, Clone)]
pub struct TenantFile {
    pub source: SourceFile,
    pub tenant: TenantConfig,
}

/// Everything read from disk (or the built-in default), valid TOML of the right shape.
/// Checks that need more than the schema (addresses, host names, references between keys)
/// happen when `gateway::Snapshot::build` turns it into runtime state.
#[derive(Debug, Clone)]
pub struct Config {
    pub main_source: SourceFile,
    pub main: MainConfig,
    pub tenants: Vec<TenantFile>,
    /// Directory that relative paths in the main file are resolved against.
    pub base_dir: PathBuf,
    /// True when this is the configuration compiled into the binary.
    pub builtin: bool,
    /// Names, sizes and modification times of the files as they were just before they were
    /// read: the file watcher compares against this, so a change made while the files were
    /// being read is still seen as a change.
    pub files: crate::reload::Fingerprint,
}

impl Config {
    /// The configuration compiled into the binary.
    pub fn builtin() -> Result<Config, ConfigError> {
        let main_source = SourceFile {
            path: "<built-in>/cong.toml".into(),
            text: DEFAULT_MAIN.into(),
        };
        let main: MainConfig = main_source.parse()?;
        let mut tenants = Vec::new();
        for (path, text) in DEFAULT_TENANTS {
            let source = SourceFile {
                path: (*path).into(),
                text: (*text).into(),
            };
            let tenant = source.parse()?;
            tenants.push(TenantFile { source, tenant });
        }
        let cfg = Config {
            main_source,
            main,
            tenants,
            base_dir: PathBuf::from("."),
            builtin: true,
            files: Vec::new(),
        };
        Ok(cfg)
    }

    /// Reads the main file and every `*.toml` in its tenants directory, then validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let files = crate::reload::config_fingerprint(path);
        let main_source = read_source(path)?;
        let main: MainConfig = main_source.parse()?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut tenants = Vec::new();
        for t in &main.tenant {
            // Inline tenants are allowed in the main file for small setups.
            tenants.push(TenantFile {
                source: main_source.clone(),
                tenant: t.clone(),
            });
        }
        let dir_setting = main.server.tenants_dir.as_ref();
        let dir = base_dir.join(
            dir_setting
                .map(|s| s.get_ref().as_str())
                .unwrap_or("tenants.d"),
        );
        if dir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| ConfigError::Io(dir.display().to_string(), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for f in files {
                let source = read_source(&f)?;
                let tenant = source.parse()?;
                tenants.push(TenantFile { source, tenant });
            }
        } else if let Some(setting) = dir_setting {
            let span = setting.span();
            return Err(main_source.error_at(
                span,
                "server.tenants_dir",
                format!("directory {} does not exist", dir.display()),
            ));
        }
        let cfg = Config {
            main_source,
            main,
            tenants,
            base_dir,
            builtin: false,
            files,
        };
        Ok(cfg)
    }

    /// The main file this configuration was read from (`None` for the built-in one).
    pub fn source_path(&self) -> Option<PathBuf> {
        (!self.builtin).then(|| PathBuf::from(&self.main_source.path))
    }

    /// Resolves a path from the main file relative to its directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

fn read_source(path: &Path) -> Result<SourceFile, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Io(path.display().to_string(), e))?;
    Ok(SourceFile {
        path: path.display().to_string(),
        text,
    })
}
