//! TLS 1.3 for every connection, with one crypto provider chosen explicitly
//! (ring) and the deployment's own CA as the only root. A process loads its
//! files from the certificates directory (`tandem certs init` writes them):
//! `ca.pem`, its own `<name>.pem` and `<name>.key`, and `crl.pem`, the CA's
//! list of revoked certificates, checked on every handshake in both
//! directions.
//!
//! Servers ask for a client certificate but do not require one at the
//! handshake: data-plane clients hold API keys, not certificates, and share
//! the listener with peers; the HTTP layer refuses replication, failover and
//! operator calls without the right certificate (`identity::Peer`). A client
//! certificate that is offered must chain to the CA and not be revoked, or the
//! handshake fails.
//!
//! `Tls` keeps the current configuration and builds it again on `reload`
//! (SIGHUP, or when one of the files changed): connections made after that use
//! the new certificate and revocation list, and `revoked()` tells open
//! streams which serial numbers are no longer trusted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::watch;
use x509_parser::prelude::FromDer as _;

/// The crypto provider of every TLS configuration of tandem.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where a process's TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub dir: PathBuf,
    /// The holder's name: a region, `router` or `operator`.
    pub name: String,
}

impl TlsFiles {
    pub fn new(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles { dir: dir.to_owned(), name: name.to_owned() }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join(format!("{}.key", self.name))
    }
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    fn all(&self) -> [PathBuf; 4] {
        [self.ca(), self.cert(), self.key(), self.crl()]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {message}")]
    File { what: &'static str, path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File { what, path: path.to_owned(), message: e.to_string() }
}

/// The loaded contents of a process's TLS files.
pub struct Material {
    pub roots: Arc<RootCertStore>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Serial numbers the CRL revokes.
    pub revoked: BTreeSet<Vec<u8>>,
}

impl Material {
    pub fn load(files: &TlsFiles) -> Result<Material, TlsError> {
        let mut roots = RootCertStore::empty();
        let ca = files.ca();
        for cert in
            CertificateDer::pem_file_iter(&ca).map_err(|e| file_error("CA certificate", &ca, e))?
        {
            let cert = cert.map_err(|e| file_error("CA certificate", &ca, e))?;
            roots.add(cert).map_err(|e| file_error("CA certificate", &ca, e))?;
        }
        if roots.is_empty() {
            return Err(file_error("CA certificate", &ca, "holds no certificate"));
        }
        let cert_path = files.cert();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .map_err(|e| file_error("certificate", &cert_path, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error("certificate", &cert_path, e))?;
        if chain.is_empty() {
            return Err(file_error("certificate", &cert_path, "holds no certificate"));
        }
        let key_path = files.key();
        let key =
            PrivateKeyDer::from_pem_file(&key_path).map_err(|e| file_error("key", &key_path, e))?;
        let crl_path = files.crl();
        let crls: Vec<CertificateRevocationListDer<'static>> =
            CertificateRevocationListDer::pem_file_iter(&crl_path)
                .map_err(|e| file_error("revocation list", &crl_path, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_error("revocation list", &crl_path, e))?;
        let mut revoked = BTreeSet::new();
        for crl in &crls {
            let (_, parsed) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(crl)
                    .map_err(|e| file_error("revocation list", &crl_path, e))?;
            for r in parsed.iter_revoked_certificates() {
                revoked.insert(r.raw_serial().to_vec());
            }
        }
        Ok(Material { roots: Arc::new(roots), chain, key, crls, revoked })
    }

    /// A server: TLS 1.3, this process's certificate, client certificates
    /// asked for, verified against the CA and the CRL when offered.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .with_crls(self.crls.clone())
            .only_check_end_entity_revocation()
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A client: TLS 1.3, servers verified against the CA and the CRL, this
    /// process's certificate offered.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            provider(),
        )
        .with_crls(self.crls.clone())
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))
    }
}

/// A process's TLS state: the current server and client configurations,
/// built again on `reload`.
pub struct Tls {
    files: TlsFiles,
    /// Whom this process's own certificate names.
    own: RwLock<crate::identity::Identity>,
    server: RwLock<Arc<ServerConfig>>,
    client: RwLock<Arc<ClientConfig>>,
    revoked: watch::Sender<Arc<BTreeSet<Vec<u8>>>>,
    /// Modification times of the files, when last loaded.
    stamps: RwLock<Vec<Option<SystemTime>>>,
}

fn stamps_of(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    files.all().iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

impl Tls {
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let stamps = stamps_of(&files);
        let m = Material::load(&files)?;
        let own = crate::identity::identity_of_certificate(&m.chain[0]).0;
        Ok(Tls {
            own: RwLock::new(own),
            server: RwLock::new(Arc::new(m.server_config()?)),
            client: RwLock::new(Arc::new(m.client_config()?)),
            revoked: watch::channel(Arc::new(m.revoked)).0,
            stamps: RwLock::new(stamps),
            files,
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whom this process's own certificate names.
    pub fn own_identity(&self) -> crate::identity::Identity {
        self.own.read().expect("tls lock").clone()
    }

    pub fn server(&self) -> Arc<ServerConfig> {
        self.server.read().expect("tls lock").clone()
    }

    pub fn client(&self) -> Arc<ClientConfig> {
        self.client.read().expect("tls lock").clone()
    }

    /// The revoked serial numbers; changes on every reload that changes them.
    pub fn revoked(&self) -> watch::Receiver<Arc<BTreeSet<Vec<u8>>>> {
        self.revoked.subscribe()
    }

    /// Whether a file changed since it was last loaded.
    pub fn changed_on_disk(&self) -> bool {
        *self.stamps.read().expect("tls lock") != stamps_of(&self.files)
    }

    /// Load the files again. On an error the current configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = stamps_of(&self.files);
        let m = Material::load(&self.files)?;
        let (server, client) = (m.server_config()?, m.client_config()?);
        *self.own.write().expect("tls lock") =
            crate::identity::identity_of_certificate(&m.chain[0]).0;
        *self.server.write().expect("tls lock") = Arc::new(server);
        *self.client.write().expect("tls lock") = Arc::new(client);
        *self.stamps.write().expect("tls lock") = stamps;
        self.revoked.send_if_modified(|r| {
            let changed = **r != m.revoked;
            if changed {
                *r = Arc::new(m.revoked);
            }
            changed
        });
        Ok(())
    }
}
