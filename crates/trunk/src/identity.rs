//! A node's trunk identity: the cluster CA it trusts, and its own certificate and key. Both ends of
//! a trunk authenticate: the dialer checks that the other end's certificate is the CA's and names
//! the node it meant to reach; the acceptor requires a certificate from the same CA and takes the
//! dialer's node id from it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::pki::{check_node_name, PkiError};

/// The ALPN of the trunk protocol; a peer speaking anything else fails the handshake.
pub const ALPN: &[u8] = b"callrelay-trunk/1";

/// Why an identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{path}: {what}")]
    Pem { path: String, what: String },
    #[error("the certificate is not valid for node {node:?} under this CA: {why}")]
    NotThisNode { node: String, why: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// The CA, certificate chain and key of one node.
#[derive(Debug)]
pub struct TrunkIdentity {
    node: String,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TrunkIdentity {
    /// Reads `ca.pem`, `{node}.pem` and `{node}.key` from a directory `callrelay cluster init`
    /// wrote.
    pub fn from_dir(dir: &Path, node: &str) -> Result<Self, IdentityError> {
        Self::load(
            node,
            &dir.join("ca.pem"),
            &dir.join(format!("{node}.pem")),
            &dir.join(format!("{node}.key")),
        )
    }

    /// Reads the CA certificate, the node's certificate (chain) and its private key, all PEM, and
    /// checks that the certificate is the CA's and names `node`, so that a misconfigured node
    /// fails at start rather than at its first trunk.
    pub fn load(node: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Self, IdentityError> {
        check_node_name(node)?;
        let pem_err = |path: &Path, what: String| IdentityError::Pem {
            path: path.display().to_string(),
            what,
        };
        let ca_certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| pem_err(ca, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(ca, e.to_string()))?;
        if ca_certs.is_empty() {
            return Err(pem_err(ca, "no CERTIFICATE in it".into()));
        }
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_err(cert, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_err(cert, "no CERTIFICATE in it".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for c in ca_certs {
            roots
                .add(c)
                .map_err(|e| pem_err(ca, format!("not a usable CA certificate: {e}")))?;
        }
        let id = TrunkIdentity {
            node: node.to_owned(),
            roots: Arc::new(roots),
            chain,
            key: key_der,
        };
        id.check_own_certificate()?;
        Ok(id)
    }

    /// This node's id, as its certificate names it.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn check_own_certificate(&self) -> Result<(), IdentityError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        let name =
            ServerName::try_from(self.node.clone()).map_err(|e| IdentityError::NotThisNode {
                node: self.node.clone(),
                why: e.to_string(),
            })?;
        verifier
            .verify_server_cert(
                &self.chain[0],
                &self.chain[1..],
                &name,
                &[],
                UnixTime::now(),
            )
            .map_err(|e| IdentityError::NotThisNode {
                node: self.node.clone(),
                why: e.to_string(),
            })?;
        // The key must be the certificate's: a mismatch would only show as every peer's
        // handshake failing.
        let signing = provider()
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|e| IdentityError::Tls(format!("the private key: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(self.chain.clone(), signing);
        certified
            .keys_match()
            .map_err(|e| IdentityError::Tls(format!("the key does not match the certificate: {e}")))
    }

    pub(crate) fn transport(&self) -> Arc<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        // A peer silent for 10 s is gone (its node died or the path broke); keep-alives every 2 s
        // keep an idle trunk up and its RTT known.
        t.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(10)).expect("10 s fits"),
        ));
        t.keep_alive_interval(Some(Duration::from_secs(2)));
        // Media that cannot be sent within ~256 KiB of queue is stale by the time it would go:
        // past it, `Peer::send_media` drops and counts instead of queueing.
        t.datagram_send_buffer_size(256 * 1024);
        t.datagram_receive_buffer_size(Some(1024 * 1024));
        Arc::new(t)
    }

    pub(crate) fn server_config(&self) -> Result<quinn::ServerConfig, IdentityError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| IdentityError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic =
            QuicServerConfig::try_from(tls).map_err(|e| IdentityError::Tls(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(self.transport());
        Ok(config)
    }

    pub(crate) fn client_config(&self) -> Result<quinn::ClientConfig, IdentityError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| IdentityError::Tls(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic =
            QuicClientConfig::try_from(tls).map_err(|e| IdentityError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(self.transport());
        Ok(config)
    }
}

/// The node a verified peer certificate names: its one DNS name.
pub(crate) fn node_of(certs: &[CertificateDer<'static>]) -> Option<String> {
    let ee = webpki::EndEntityCert::try_from(certs.first()?).ok()?;
    let mut names = ee.valid_dns_names();
    let name = names.next()?;
    if names.next().is_some() {
        return None;
    }
    Some(name.to_owned())
}
