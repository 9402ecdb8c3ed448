//! The certificate store of cluster mode: the node's certificate directory is a mirror of what
//! Redis holds, so reads never wait on the network and a node that loses Redis (or restarts
//! without it) serves its last-known certificates. Writes go to the mirror and are queued for
//! Redis (private keys and ACME state sealed with the cluster key); other nodes' writes reach
//! the mirror through the change log (`Cluster::pull_cert`, `pull_blob`). Operator pairs
//! (`NAME.crt`/`NAME.key`) stay per node: they are files the operator deploys.

use super::{Cluster, Outgoing};
use crate::certs::{CertStore, DirStore, StoredPair};
use std::path::PathBuf;
use std::sync::Arc;

pub struct RedisStore {
    mirror: DirStore,
    cluster: Arc<Cluster>,
}

impl RedisStore {
    pub fn new(mirror: DirStore, cluster: Arc<Cluster>) -> RedisStore {
        RedisStore { mirror, cluster }
    }
}

impl CertStore for RedisStore {
    fn read_managed(&self, name: &str) -> std::io::Result<Option<StoredPair>> {
        self.mirror.read_managed(name)
    }

    fn write_managed(&self, name: &str, pair: &StoredPair) -> std::io::Result<()> {
        self.mirror.write_managed(name, pair)?;
        self.cluster.send(Outgoing::Cert(name.to_string()));
        Ok(())
    }

    fn managed_names(&self) -> std::io::Result<Vec<String>> {
        self.mirror.managed_names()
    }

    fn read_blob(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.mirror.read_blob(key)
    }

    fn write_blob(&self, key: &str, data: &[u8], secret: bool) -> std::io::Result<()> {
        self.mirror.write_blob(key, data, secret)?;
        self.cluster.send(Outgoing::Blob(key.to_string()));
        Ok(())
    }

    fn remove_blob(&self, key: &str) -> std::io::Result<()> {
        self.mirror.remove_blob(key)?;
        self.cluster.send(Outgoing::Blob(key.to_string()));
        Ok(())
    }

    fn operator_pairs(&self) -> std::io::Result<Vec<(String, PathBuf, PathBuf)>> {
        self.mirror.operator_pairs()
    }
}
