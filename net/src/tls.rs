//! Mutual TLS against a cluster CA: development CA and node certificates
//! (rcgen), rustls configurations, and the check that a certificate names the
//! node it claims to be.
//!
//! # Naming
//!
//! A node certificate carries one DNS subject alternative name,
//! `node-<id>.<cluster>.barge`, where `<id>` is the decimal [`PeerId`] and
//! `<cluster>` the [`ClusterId`] as 16 lower-case hex digits, for example
//! `node-3.000000000000002a.barge`. The dialer verifies the server certificate
//! against that name (plain rustls server-name verification); the acceptor
//! verifies the client certificate against the cluster CA during TLS and,
//! once the handshake frame says who the dialer claims to be, that the
//! certificate names that node ([`verify_peer_certificate`]).
//!
//! The ALPN is `barge/<protocol version>`, so nodes of different protocol
//! versions fail the TLS handshake itself (`no_application_protocol`).
//!
//! # Files written by [`write_dev_cluster`] (and `barge-loadgen certs`)
//!
//! | file                 | content                                         |
//! |----------------------|-------------------------------------------------|
//! | `ca.pem`             | cluster CA certificate                          |
//! | `ca.key.pem`         | cluster CA private key (PKCS#8), keep it secret |
//! | `node-<id>.pem`      | node certificate, signed by the CA              |
//! | `node-<id>.key.pem`  | node private key (PKCS#8)                       |
//!
//! The cluster id used in the names is written to `cluster` (hex, one line).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{ClusterId, PeerId};

/// A failure to create, load or use certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not generate a key or certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration (for example a key that does not
    /// match its certificate).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built from the CA.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The crypto provider lacks the cipher suite QUIC needs for its initial
    /// packets.
    #[error("QUIC initial cipher suite missing: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A PEM file or string could not be parsed.
    #[error("bad PEM in {what}: {reason}")]
    Pem {
        /// Which object (file name or description).
        what: String,
        /// Parser message.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The peer presented no certificate or one that does not name the node
    /// it claims to be.
    #[error("peer certificate does not name node {node} of cluster {cluster}: {reason}")]
    PeerCertificate {
        /// The node the peer claimed to be.
        node: PeerId,
        /// The cluster.
        cluster: ClusterId,
        /// What was wrong.
        reason: String,
    },
}

/// The DNS name a node's certificate carries (see the module docs).
pub fn node_name(cluster: ClusterId, node: PeerId) -> String {
    format!("node-{}.{:016x}.barge", node.0, cluster.0)
}

/// The ALPN protocol id for a protocol version.
pub fn alpn(protocol_version: u16) -> Vec<u8> {
    format!("barge/{protocol_version}").into_bytes()
}

/// A node's credentials: its certificate chain and key, and the cluster CA it
/// trusts.
pub struct NodeIdentity {
    /// The node the certificate names.
    pub node: PeerId,
    /// The cluster the certificate names.
    pub cluster: ClusterId,
    /// The cluster CA certificate (the only trust root).
    pub ca: CertificateDer<'static>,
    /// The node certificate (first) and any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> NodeIdentity {
        NodeIdentity {
            node: self.node,
            cluster: self.cluster,
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is deliberately left out of logs.
        formatter
            .debug_struct("NodeIdentity")
            .field("node", &self.node)
            .field("cluster", &self.cluster)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Parses an identity from PEM text: the CA certificate, the node
    /// certificate chain and the node key.
    ///
    /// # Errors
    /// [`TlsError::Pem`] if any of the three does not parse.
    pub fn from_pem(
        cluster: ClusterId,
        node: PeerId,
        ca_pem: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<NodeIdentity, TlsError> {
        let pem_error = |what: &str, error: rustls::pki_types::pem::Error| TlsError::Pem {
            what: what.to_owned(),
            reason: error.to_string(),
        };
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|error| pem_error("CA certificate", error))?;
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| pem_error("node certificate", error))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "node certificate".to_owned(),
                reason: "no certificate found".to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|error| pem_error("node key", error))?;
        Ok(NodeIdentity {
            node,
            cluster,
            ca,
            chain,
            key,
        })
    }

    /// Loads node `node`'s identity from a directory written by
    /// [`write_dev_cluster`] (file names in the module docs).
    ///
    /// # Errors
    /// [`TlsError::Io`] naming the file that cannot be read, [`TlsError::Pem`]
    /// if one does not parse.
    pub fn load(
        directory: &Path,
        cluster: ClusterId,
        node: PeerId,
    ) -> Result<NodeIdentity, TlsError> {
        let read = |name: String| {
            let path = directory.join(name);
            fs::read_to_string(&path).map_err(|source| TlsError::Io { path, source })
        };
        let ca = read("ca.pem".to_owned())?;
        let chain = read(format!("node-{}.pem", node.0))?;
        let key = read(format!("node-{}.key.pem", node.0))?;
        NodeIdentity::from_pem(cluster, node, &ca, &chain, &key)
    }
}

/// The PEM text of an issued node certificate and its key.
#[derive(Clone)]
pub struct IssuedPem {
    /// The node certificate.
    pub chain_pem: String,
    /// The node private key (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for IssuedPem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("IssuedPem").finish_non_exhaustive()
    }
}

/// A development cluster CA that issues node certificates. For tests, local
/// clusters and `barge-loadgen certs`; production clusters bring their own CA.
pub struct DevCa {
    cluster: ClusterId,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
    cert: CertificateDer<'static>,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("DevCa")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// Generates a fresh CA key (ECDSA P-256) and self-signed certificate.
    ///
    /// # Errors
    /// [`TlsError::Generate`] if rcgen fails.
    pub fn generate(cluster: ClusterId) -> Result<DevCa, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(
            DnType::CommonName,
            format!("barge cluster {cluster} development CA"),
        );
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(DevCa {
            cluster,
            cert_pem: cert.pem(),
            cert: cert.der().clone(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The cluster this CA serves.
    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate naming `node` (server and client auth), PEM.
    ///
    /// # Errors
    /// [`TlsError::Generate`] if rcgen fails.
    pub fn issue_pem(&self, node: PeerId) -> Result<IssuedPem, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![node_name(self.cluster, node)])?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_name(self.cluster, node));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedPem {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate naming `node` and returns it as an identity that
    /// trusts this CA.
    ///
    /// # Errors
    /// [`TlsError::Generate`] if rcgen fails.
    pub fn issue(&self, node: PeerId) -> Result<NodeIdentity, TlsError> {
        let issued = self.issue_pem(node)?;
        let mut identity = NodeIdentity::from_pem(
            self.cluster,
            node,
            &self.cert_pem,
            &issued.chain_pem,
            &issued.key_pem,
        )?;
        identity.ca = self.cert.clone();
        Ok(identity)
    }
}

/// Writes a development CA and certificates for `nodes` into `directory`
/// (created if missing) under the names in the module docs. Returns the paths
/// written.
///
/// # Errors
/// [`TlsError::Io`] naming the file that could not be written,
/// [`TlsError::Generate`] if rcgen fails.
pub fn write_dev_cluster(
    directory: &Path,
    cluster: ClusterId,
    nodes: &[PeerId],
) -> Result<Vec<PathBuf>, TlsError> {
    fs::create_dir_all(directory).map_err(|source| TlsError::Io {
        path: directory.to_owned(),
        source,
    })?;
    let ca = DevCa::generate(cluster)?;
    let mut written = Vec::with_capacity(3 + 2 * nodes.len());
    let mut write = |name: String, content: &str, secret: bool| {
        let path = directory.join(name);
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Private keys are readable by their owner only.
            options.mode(if secret { 0o600 } else { 0o644 });
        }
        let result = options
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, content.as_bytes()));
        result.map_err(|source| TlsError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
        Ok::<(), TlsError>(())
    };
    write("cluster".to_owned(), &format!("{cluster}\n"), false)?;
    write("ca.pem".to_owned(), ca.cert_pem(), false)?;
    write("ca.key.pem".to_owned(), ca.key_pem(), true)?;
    for node in nodes {
        let issued = ca.issue_pem(*node)?;
        write(format!("node-{}.pem", node.0), &issued.chain_pem, false)?;
        write(format!("node-{}.key.pem", node.0), &issued.key_pem, true)?;
    }
    Ok(written)
}

/// ring's provider with TLS_AES_128_GCM_SHA256 first. rustls lists
/// AES-256-GCM first, and the server follows the client's order, so both
/// sides of a Barge connection would otherwise pick the 14-round cipher;
/// AES-128 (10 rounds) protects a LAN link between nodes of one cluster
/// just as well for this purpose and every QUIC packet is sealed with it.
/// The other suites stay listed, after it, so a peer preferring them still
/// connects.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let preferred = rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;
    // A stable sort: the preferred suite first, the others in ring's order.
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != preferred);
    Arc::new(provider)
}

fn roots(identity: &NodeIdentity) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.ca.clone())?;
    Ok(Arc::new(roots))
}

/// The rustls server configuration of a node: TLS 1.3 only, client
/// certificates required and verified against the cluster CA, ALPN
/// `barge/<protocol_version>`.
///
/// # Errors
/// [`TlsError`] if the CA or the node's key and chain are unusable.
pub fn server_crypto(
    identity: &NodeIdentity,
    protocol_version: u16,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider())
            .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![alpn(protocol_version)];
    Ok(config)
}

/// The rustls client configuration of a node: TLS 1.3 only, server verified
/// against the cluster CA (and by name, see [`node_name`]), the node's own
/// certificate presented, ALPN `barge/<protocol_version>`.
///
/// # Errors
/// [`TlsError`] if the CA or the node's key and chain are unusable.
pub fn client_crypto(
    identity: &NodeIdentity,
    protocol_version: u16,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![alpn(protocol_version)];
    Ok(config)
}

/// Checks that the end-entity certificate a peer presented (already verified
/// against the CA by rustls) names node `node` of `cluster`.
///
/// # Errors
/// [`TlsError::PeerCertificate`] if there is no certificate, it does not
/// parse, or it names another node or cluster.
pub fn verify_peer_certificate(
    chain: &[CertificateDer<'_>],
    cluster: ClusterId,
    node: PeerId,
) -> Result<(), TlsError> {
    let refuse = |reason: String| TlsError::PeerCertificate {
        node,
        cluster,
        reason,
    };
    let first = chain
        .first()
        .ok_or_else(|| refuse("no certificate presented".to_owned()))?;
    let cert = webpki::EndEntityCert::try_from(first).map_err(|error| refuse(error.to_string()))?;
    let name = ServerName::try_from(node_name(cluster, node))
        .map_err(|error| refuse(error.to_string()))?;
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|error| refuse(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_names_its_node_only() {
        let ca = DevCa::generate(ClusterId(42)).expect("generate CA");
        let identity = ca.issue(PeerId(3)).expect("issue");
        assert!(verify_peer_certificate(&identity.chain, ClusterId(42), PeerId(3)).is_ok());
        assert!(verify_peer_certificate(&identity.chain, ClusterId(42), PeerId(4)).is_err());
        assert!(verify_peer_certificate(&identity.chain, ClusterId(43), PeerId(3)).is_err());
        assert!(verify_peer_certificate(&[], ClusterId(42), PeerId(3)).is_err());
    }

    #[test]
    fn configurations_build_from_an_issued_identity() {
        let ca = DevCa::generate(ClusterId(1)).expect("generate CA");
        let identity = ca.issue(PeerId(1)).expect("issue");
        let server = server_crypto(&identity, 1).expect("server config");
        assert_eq!(server.alpn_protocols, vec![b"barge/1".to_vec()]);
        client_crypto(&identity, 1).expect("client config");
    }

    /// Runs a TLS 1.3 handshake between two nodes' configurations in memory
    /// and returns the suite each side negotiated.
    fn negotiated_suites(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
        server_name: String,
    ) -> (rustls::CipherSuite, rustls::CipherSuite) {
        let name = ServerName::try_from(server_name).expect("a valid DNS name");
        let mut client =
            rustls::ClientConnection::new(Arc::new(client), name).expect("client connection");
        let mut server = rustls::ServerConnection::new(Arc::new(server)).expect("server");
        // A TLS 1.3 handshake with client certificates takes two round
        // trips; a bounded loop fails the test instead of spinning.
        for _ in 0..16 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut flight = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut flight).expect("client write");
            }
            let mut reader = &flight[..];
            while !reader.is_empty() {
                server.read_tls(&mut reader).expect("server read");
                server
                    .process_new_packets()
                    .expect("server accepts the client");
            }
            let mut flight = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut flight).expect("server write");
            }
            let mut reader = &flight[..];
            while !reader.is_empty() {
                client.read_tls(&mut reader).expect("client read");
                client
                    .process_new_packets()
                    .expect("client accepts the server");
            }
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        let suite = |suite: Option<rustls::SupportedCipherSuite>| {
            suite.expect("a negotiated suite").suite()
        };
        (
            suite(client.negotiated_cipher_suite()),
            suite(server.negotiated_cipher_suite()),
        )
    }

    #[test]
    fn nodes_negotiate_aes_128_gcm() {
        let ca = DevCa::generate(ClusterId(5)).expect("generate CA");
        let dialer = ca.issue(PeerId(1)).expect("issue 1");
        let acceptor = ca.issue(PeerId(2)).expect("issue 2");
        let (client, server) = negotiated_suites(
            client_crypto(&dialer, 1).expect("client config"),
            server_crypto(&acceptor, 1).expect("server config"),
            node_name(ClusterId(5), PeerId(2)),
        );
        assert_eq!(client, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(server, client);
    }

    #[test]
    fn a_peer_preferring_aes_256_still_connects() {
        let ca = DevCa::generate(ClusterId(5)).expect("generate CA");
        let dialer = ca.issue(PeerId(1)).expect("issue 1");
        let acceptor = ca.issue(PeerId(2)).expect("issue 2");
        // An older build: ring's default order, AES-256-GCM first.
        let mut older = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots(&dialer).expect("roots"))
        .with_client_auth_cert(dialer.chain.clone(), dialer.key.clone_key())
        .expect("client certificate");
        older.alpn_protocols = vec![alpn(1)];
        let (client, server) = negotiated_suites(
            older,
            server_crypto(&acceptor, 1).expect("server config"),
            node_name(ClusterId(5), PeerId(2)),
        );
        assert_eq!(client, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
        assert_eq!(server, client);
    }

    #[test]
    fn written_files_load_back() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let nodes = [PeerId(1), PeerId(2)];
        let written = write_dev_cluster(directory.path(), ClusterId(7), &nodes).expect("write");
        assert_eq!(written.len(), 3 + 4);
        let identity =
            NodeIdentity::load(directory.path(), ClusterId(7), PeerId(2)).expect("load node 2");
        assert!(verify_peer_certificate(&identity.chain, ClusterId(7), PeerId(2)).is_ok());
        let missing = NodeIdentity::load(directory.path(), ClusterId(7), PeerId(9));
        assert!(matches!(missing, Err(TlsError::Io { .. })));
    }
}
