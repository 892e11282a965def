//! The cluster's certificates: one CA per cluster, one certificate per node naming the node.
//!
//! `callrelay cluster init` writes them with [`init_dir`]: `ca.pem` and `ca.key` (kept by the
//! operator to add nodes later), and `{node}.pem` / `{node}.key` for each node. A node's
//! certificate carries its `cluster.node_id` as its only DNS name and serves as both a TLS
//! server and a TLS client certificate, since either node of a pair may dial.
//!
//! Private keys are written with mode 0600 (Unix). Nothing is ever overwritten: running the
//! command again with more nodes reuses the CA and issues only the missing certificates.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::DnsName;

/// How long the certificates `init` writes are valid: ten years, so a cluster does not stop on
/// a forgotten date; rotate by issuing a new CA and rolling the nodes.
const VALIDITY_DAYS: i64 = 3650;

/// What went wrong making or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "{0:?} cannot name a trunk certificate: a node id on the trunk must be a DNS name \
         (letters, digits, '-' and '.', at most 64 characters)"
    )]
    BadNodeName(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Bad { path: PathBuf, what: String },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What [`init_dir`] did, for the command to print.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    /// The CA was created now (false: an existing `ca.pem` / `ca.key` was reused).
    pub created_ca: bool,
    /// Nodes whose certificate and key were written now.
    pub issued: Vec<String>,
    /// Nodes that already had a certificate in the directory (left as they were).
    pub kept: Vec<String>,
}

/// Checks that `node` can be a certificate's DNS name (and so a TLS server name).
pub fn check_node_name(node: &str) -> Result<(), PkiError> {
    let ok = !node.is_empty()
        && node.len() <= 64
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && DnsName::try_from(node).is_ok();
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadNodeName(node.to_owned()))
    }
}

/// Creates (or completes) a cluster's certificate directory: the CA if it is missing, and a
/// certificate and key for each node that has none. Existing files are never overwritten.
pub fn init_dir(dir: &Path, nodes: &[String]) -> Result<InitReport, PkiError> {
    for node in nodes {
        check_node_name(node)?;
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let ca_pem = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    let mut report = InitReport::default();
    let issuer = if ca_pem.exists() || ca_key.exists() {
        let cert = read(&ca_pem)?;
        let key = read(&ca_key)?;
        let key_pair = KeyPair::from_pem(&key).map_err(|e| PkiError::Bad {
            path: ca_key.clone(),
            what: format!("not a private key in PEM: {e}"),
        })?;
        Issuer::from_ca_cert_pem(&cert, key_pair).map_err(|e| PkiError::Bad {
            path: ca_pem.clone(),
            what: format!("not a CA certificate in PEM: {e}"),
        })?
    } else {
        let key_pair = KeyPair::generate()?;
        let params = ca_params(&key_pair)?;
        let cert = params.self_signed(&key_pair)?;
        write_new(&ca_key, key_pair.serialize_pem().as_bytes(), true)?;
        write_new(&ca_pem, cert.pem().as_bytes(), false)?;
        report.created_ca = true;
        Issuer::new(params, key_pair)
    };
    for node in nodes {
        let cert_path = dir.join(format!("{node}.pem"));
        let key_path = dir.join(format!("{node}.key"));
        if cert_path.exists() || key_path.exists() {
            report.kept.push(node.clone());
            continue;
        }
        let key_pair = KeyPair::generate()?;
        let cert = node_params(node)?.signed_by(&key_pair, &issuer)?;
        write_new(&key_path, key_pair.serialize_pem().as_bytes(), true)?;
        write_new(&cert_path, cert.pem().as_bytes(), false)?;
        report.issued.push(node.clone());
    }
    Ok(report)
}

fn validity(params: &mut CertificateParams) {
    let now = std::time::SystemTime::now();
    // An hour back: nodes whose clocks run a little behind the one that issued still accept it.
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(VALIDITY_DAYS as u64 * 86_400)).into();
}

fn ca_params(key: &KeyPair) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    // Each cluster's CA has its own name (from its public key), so a certificate of another
    // cluster is refused as an unknown issuer (TLS alert unknown_ca) rather than matched by
    // name to this CA and failing its signature check.
    let tag: String = key.public_key_raw()[1..7]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dn.push(DnType::CommonName, format!("callrelay cluster CA {tag}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params);
    Ok(params)
}

fn node_params(node: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(vec![node.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("callrelay node {node}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    Ok(params)
}

pub(crate) fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_must_be_dns_names() {
        for ok in ["a", "relay-1", "eu-west.relay-2", "Node7"] {
            assert!(check_node_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "relay:7700",
            "a_b",
            "-a",
            "a..b",
            &"x".repeat(65),
            "ünï",
        ] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn init_writes_a_ca_and_one_pair_per_node_then_only_adds() {
        let dir = tempfile::tempdir().unwrap();
        let first = init_dir(dir.path(), &["a".into(), "b".into()]).unwrap();
        assert!(first.created_ca);
        assert_eq!(first.issued, ["a", "b"]);
        let ca_before = fs::read(dir.path().join("ca.pem")).unwrap();
        let a_before = fs::read(dir.path().join("a.pem")).unwrap();

        let second = init_dir(dir.path(), &["a".into(), "c".into()]).unwrap();
        assert!(!second.created_ca);
        assert_eq!(second.issued, ["c"]);
        assert_eq!(second.kept, ["a"]);
        assert_eq!(fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);
        assert_eq!(fs::read(dir.path().join("a.pem")).unwrap(), a_before);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca.key", "a.key", "c.key"] {
                let mode = fs::metadata(dir.path().join(key))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o077, 0, "{key} is readable by others: {mode:o}");
            }
        }
    }

    #[test]
    fn a_bad_node_name_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = init_dir(dir.path(), &["a".into(), "b:1".into()]).unwrap_err();
        assert!(
            matches!(err, PkiError::BadNodeName(ref n) if n == "b:1"),
            "{err}"
        );
        assert!(!dir.path().join("ca.pem").exists());
    }
}
