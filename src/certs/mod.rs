//! The certificate store: where certificates, keys and ACME state live between runs. Operator
//! pairs (`NAME.crt` + `NAME.key`) are read from the store directory; ACME-managed
//! certificates are one file `acme/NAME.pem` (key and chain together, mode 0600, so a crash
//! can never leave a new key next to an old chain); ACME accounts and orders in progress are
//! small blobs under `acme/state/`. Every write is a temporary file, fsync, rename. The store is
//! behind the `CertStore` trait so a shared cluster store can replace the directory later. It
//! does not parse or serve certificates (that is `tls`) and does not talk to CAs (`acme`).

pub mod cli;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A certificate chain and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPair {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Persistent storage of managed certificates and ACME state.
pub trait CertStore: Send + Sync {
    /// The managed certificate `name`, if stored.
    fn read_managed(&self, name: &str) -> std::io::Result<Option<StoredPair>>;
    /// Stores (replaces) the managed certificate `name` atomically.
    fn write_managed(&self, name: &str, pair: &StoredPair) -> std::io::Result<()>;
    /// Names of every managed certificate.
    fn managed_names(&self) -> std::io::Result<Vec<String>>;
    /// Small state blobs (accounts, orders in progress); `secret` ones are kept 0600.
    fn read_blob(&self, key: &str) -> std::io::Result<Option<Vec<u8>>>;
    fn write_blob(&self, key: &str, data: &[u8], secret: bool) -> std::io::Result<()>;
    fn remove_blob(&self, key: &str) -> std::io::Result<()>;
    /// Operator pairs found in the store: `(name, cert path, key path)`.
    fn operator_pairs(&self) -> std::io::Result<Vec<(String, PathBuf, PathBuf)>>;
}

/// The store as a directory on local disk.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with('.')
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl DirStore {
    pub fn new(dir: impl Into<PathBuf>) -> DirStore {
        DirStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `name` may name a managed certificate or a state blob.
    pub fn valid_name(name: &str) -> bool {
        valid_key(name)
    }

    fn managed_path(&self, name: &str) -> std::io::Result<PathBuf> {
        check_key(name)?;
        Ok(self.dir.join("acme").join(format!("{name}.pem")))
    }

    fn blob_path(&self, key: &str) -> std::io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.dir.join("acme").join("state").join(key))
    }
}

fn check_key(k: &str) -> std::io::Result<()> {
    if valid_key(k) {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{k}` is not a valid store name"),
        ))
    }
}

/// Writes `data` to `path` so that a reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        std::process::id(),
        fastrand::u64(..)
    ));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        // The mode given to open is filtered by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

fn read_opt(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Splits a bundle into its private key block(s) and everything else (the chain).
fn split_bundle(text: &str) -> StoredPair {
    let mut chain = String::new();
    let mut key = String::new();
    let mut in_key = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
            in_key = true;
        }
        let out = if in_key { &mut key } else { &mut chain };
        out.push_str(line);
        out.push('\n');
        if line.starts_with("-----END") && line.contains("PRIVATE KEY") {
            in_key = false;
        }
    }
    StoredPair {
        chain_pem: chain.trim_start().to_string(),
        key_pem: key,
    }
}

impl CertStore for DirStore {
    fn read_managed(&self, name: &str) -> std::io::Result<Option<StoredPair>> {
        let Some(b) = read_opt(&self.managed_path(name)?)? else {
            return Ok(None);
        };
        Ok(Some(split_bundle(&String::from_utf8_lossy(&b))))
    }

    fn write_managed(&self, name: &str, pair: &StoredPair) -> std::io::Result<()> {
        let mut bundle = pair.key_pem.trim_end().to_string();
        bundle.push('\n');
        bundle.push_str(pair.chain_pem.trim_end());
        bundle.push('\n');
        write_atomic(&self.managed_path(name)?, bundle.as_bytes(), 0o600)
    }

    fn managed_names(&self) -> std::io::Result<Vec<String>> {
        let dir = self.dir.join("acme");
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = n.strip_suffix(".pem") {
                if valid_key(stem) {
                    out.push(stem.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn read_blob(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        read_opt(&self.blob_path(key)?)
    }

    fn write_blob(&self, key: &str, data: &[u8], secret: bool) -> std::io::Result<()> {
        write_atomic(
            &self.blob_path(key)?,
            data,
            if secret { 0o600 } else { 0o644 },
        )
    }

    fn remove_blob(&self, key: &str) -> std::io::Result<()> {
        match fs::remove_file(self.blob_path(key)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn operator_pairs(&self) -> std::io::Result<Vec<(String, PathBuf, PathBuf)>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "crt") {
                let key = p.with_extension("key");
                if key.exists() {
                    let name = p
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    out.push((name, p, key));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_roundtrip_atomic_and_private() {
        let d = tempfile::tempdir().unwrap();
        let s = DirStore::new(d.path());
        let p = StoredPair {
            chain_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nBB==\n-----END PRIVATE KEY-----\n".into(),
        };
        s.write_managed("quangninh", &p).unwrap();
        assert_eq!(s.read_managed("quangninh").unwrap(), Some(p));
        let mode = fs::metadata(d.path().join("acme/quangninh.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(s.managed_names().unwrap(), vec!["quangninh".to_string()]);
        assert!(s.read_managed("../etc").is_err());
        // No temporary files are left behind.
        let left: Vec<_> = fs::read_dir(d.path().join("acme"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(left.is_empty());
    }
}
