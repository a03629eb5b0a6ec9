//! TLS material for SIP over TLS (RFC 3261 §26.2, RFC 5630): the
//! certificates, keys and CA sets the configuration names, read from their
//! files, checked, and turned into rustls server and client configurations.
//!
//! Owns: reading PEM files (the only file reads besides the config file
//! itself), the checks `check-config` and every load make (readable, parses,
//! key matches certificate, inside its validity period, names present), and
//! [`TlsSettings`], the set of rustls configurations the transports
//! handshake with. A reload builds a new [`TlsSettings`] and hands it to the
//! transports: handshakes that start after it use the new certificates,
//! connections already up keep theirs.
//!
//! Protocols: TLS 1.2 and 1.3 only (rustls has nothing older), with the
//! `ring` provider. Peers are verified with the WebPKI rules: a trunk's
//! certificate must chain to the trunk's CA set and carry its name (the
//! trunk's host, or `tls.server_name`) as a subjectAltName; a client
//! certificate, where a realm asks for one, must chain to the realm's CA set.
//!
//! May not: touch sockets (the handshakes are `transport::tls`'s).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{Config, PeerAddress, Transport};

/// What a certificate says about itself, for check-config, logs and the
/// expiry metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name, or the whole subject when it has none.
    pub subject: String,
    /// The issuer's common name, or the whole issuer.
    pub issuer: String,
    /// subjectAltName DNS names and IP addresses.
    pub names: Vec<String>,
    /// Start of the validity period, Unix seconds.
    pub not_before: i64,
    /// End of the validity period, Unix seconds.
    pub not_after: i64,
}

impl CertInfo {
    /// What a DER certificate says about itself.
    pub fn parse(der: &[u8]) -> Result<CertInfo, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let common_name = |name: &x509_parser::x509::X509Name<'_>| {
            name.iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map_or_else(|| name.to_string(), str::to_owned)
        };
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                use x509_parser::extensions::GeneralName;
                match name {
                    GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            names.push(std::net::Ipv4Addr::from(v4).to_string());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            names.push(std::net::Ipv6Addr::from(v6).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(CertInfo {
            subject: common_name(cert.subject()),
            issuer: common_name(cert.issuer()),
            names,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// `subject (names a, b; issued by X; valid until 2027-01-01)`.
    pub fn describe(&self) -> String {
        let names = if self.names.is_empty() {
            "no subjectAltName".to_owned()
        } else {
            format!("names {}", self.names.join(", "))
        };
        format!(
            "\"{}\" ({names}; issued by \"{}\"; valid until {})",
            self.subject,
            self.issuer,
            utc_date(self.not_after)
        )
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for Unix seconds (civil-from-days, proleptic
/// Gregorian).
pub fn utc_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A TLS file that can't be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file could not be read (missing, or no permission).
    #[error("cannot read \"{path}\": {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The file is not PEM, or a section is broken.
    #[error("\"{path}\" is not valid PEM: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No `CERTIFICATE` section in the file.
    #[error("\"{path}\" holds no certificate (expected a PEM \"BEGIN CERTIFICATE\" section)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// No private key section in the file.
    #[error("\"{path}\" holds no private key (expected PEM PRIVATE KEY, RSA or EC)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A certificate that does not parse as X.509.
    #[error("\"{path}\": certificate {index} does not parse: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Its position in the file, from 1.
        index: usize,
        /// The parser's reason.
        reason: String,
    },
    /// A key of a type or form the crypto provider can't sign with.
    #[error("\"{path}\": unsupported private key: {reason}")]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the private key \"{key}\" does not belong to the certificate \"{certificate}\"")]
    KeyMismatch {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate's validity period has ended.
    #[error("\"{path}\": certificate \"{subject}\" expired on {}", utc_date(*not_after))]
    Expired {
        /// The file.
        path: PathBuf,
        /// Its subject.
        subject: String,
        /// When it expired (Unix seconds).
        not_after: i64,
    },
    /// The certificate's validity period has not begun.
    #[error("\"{path}\": certificate \"{subject}\" is not valid before {}", utc_date(*not_before))]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Its subject.
        subject: String,
        /// When it becomes valid (Unix seconds).
        not_before: i64,
    },
    /// A certificate a peer would verify by name has no subjectAltName.
    #[error(
        "\"{path}\": certificate \"{subject}\" has no subjectAltName; peers check the name there"
    )]
    NoNames {
        /// The file.
        path: PathBuf,
        /// Its subject.
        subject: String,
    },
    /// A CA file rustls refuses as a trust anchor.
    #[error("\"{path}\": not usable as a CA set: {reason}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        reason: String,
    },
    /// A trunk's server name is neither a DNS name nor an IP address.
    #[error("\"{name}\" is not a DNS name or IP address to verify a certificate against")]
    BadServerName {
        /// The name.
        name: String,
    },
    /// rustls refused to build a configuration from otherwise good files.
    #[error("TLS configuration refused: {reason}")]
    Config {
        /// rustls' reason.
        reason: String,
    },
}

/// Unix seconds of `now`.
fn unix(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls_pki_types::pem::Error) -> TlsFileError {
    TlsFileError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// The certificates of a PEM file, with what each says, in file order.
fn certificates(
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, Vec<CertInfo>), TlsFileError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.to_owned(),
        });
    }
    let infos = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            CertInfo::parse(der).map_err(|reason| TlsFileError::BadCertificate {
                path: path.to_owned(),
                index: i + 1,
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((chain, infos))
}

fn check_validity(path: &Path, info: &CertInfo, now: i64) -> Result<(), TlsFileError> {
    if now > info.not_after {
        return Err(TlsFileError::Expired {
            path: path.to_owned(),
            subject: info.subject.clone(),
            not_after: info.not_after,
        });
    }
    if now < info.not_before {
        return Err(TlsFileError::NotYetValid {
            path: path.to_owned(),
            subject: info.subject.clone(),
            not_before: info.not_before,
        });
    }
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain (end entity first) read from `certificate`, with its
/// private key from `private_key`: both readable and parsed, the key the
/// certificate's, the certificate inside its validity period at `now`.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// What the end-entity certificate says.
    pub info: CertInfo,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            info: self.info.clone(),
        }
    }
}

/// Which of a pair of files a problem is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairFile {
    /// The certificate file.
    Certificate,
    /// The private key file.
    PrivateKey,
}

impl Identity {
    /// Reads and checks a certificate and its key; on failure says which
    /// file is at fault. `named`: the certificate is one peers verify by
    /// name (a server's), so it must carry a subjectAltName.
    pub fn load(
        certificate: &Path,
        private_key: &Path,
        now: SystemTime,
        named: bool,
    ) -> Result<Identity, (PairFile, TlsFileError)> {
        let cert_err = |e| (PairFile::Certificate, e);
        let key_err = |e| (PairFile::PrivateKey, e);
        let (chain, infos) = certificates(certificate).map_err(cert_err)?;
        let info = infos.into_iter().next().ok_or_else(|| {
            cert_err(TlsFileError::NoCertificate {
                path: certificate.to_owned(),
            })
        })?;
        check_validity(certificate, &info, unix(now)).map_err(cert_err)?;
        if named && info.names.is_empty() {
            return Err(cert_err(TlsFileError::NoNames {
                path: certificate.to_owned(),
                subject: info.subject.clone(),
            }));
        }
        let pem = read(private_key).map_err(key_err)?;
        let key = match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(key) => key,
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                return Err(key_err(TlsFileError::NoKey {
                    path: private_key.to_owned(),
                }));
            }
            Err(e) => return Err(key_err(pem_error(private_key, e))),
        };
        let signer = provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| {
                key_err(TlsFileError::UnsupportedKey {
                    path: private_key.to_owned(),
                    reason: e.to_string(),
                })
            })?;
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), signer);
        if certified.keys_match().is_err() {
            return Err(key_err(TlsFileError::KeyMismatch {
                certificate: certificate.to_owned(),
                key: private_key.to_owned(),
            }));
        }
        Ok(Identity { chain, key, info })
    }
}

/// A CA set read from a PEM file: the trust anchors to verify peers with.
#[derive(Clone, Debug)]
pub struct CaSet {
    roots: Arc<RootCertStore>,
    /// What each CA certificate says.
    pub infos: Vec<CertInfo>,
}

impl CaSet {
    /// Reads a PEM file of CA certificates; each must parse and be
    /// accepted as a trust anchor, and at least one must be inside its
    /// validity period at `now`. (A system bundle may hold a CA that has
    /// lapsed; it then verifies nothing, which is no reason to refuse the
    /// others. A set of which none is valid verifies nothing at all.)
    pub fn load(path: &Path, now: SystemTime) -> Result<CaSet, TlsFileError> {
        let (chain, infos) = certificates(path)?;
        let now = unix(now);
        if let Some(Err(e)) = infos
            .iter()
            .map(|info| check_validity(path, info, now))
            .reduce(|a, b| a.or(b))
        {
            return Err(e);
        }
        let mut roots = RootCertStore::empty();
        for der in chain {
            roots.add(der).map_err(|e| TlsFileError::BadCa {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
        Ok(CaSet {
            roots: Arc::new(roots),
            infos,
        })
    }
}

fn refused(e: impl fmt::Display) -> TlsFileError {
    TlsFileError::Config {
        reason: e.to_string(),
    }
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A server configuration: `identity` presented, client certificates
/// verified against `clients` when given (required if `require`).
pub fn server_config(
    identity: &Identity,
    clients: Option<&CaSet>,
    require: bool,
) -> Result<Arc<ServerConfig>, TlsFileError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(refused)?;
    let builder = match clients {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::clone(&ca.roots), provider());
            let verifier = if require {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(refused)?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(refused)?;
    // SIP carries no ALPN; nothing else to negotiate.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// A client configuration: servers verified against `ca` (no CA: nothing
/// verifies, every handshake fails), `identity` presented when a server
/// asks for a client certificate.
pub fn client_config(
    ca: Option<&CaSet>,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, TlsFileError> {
    let roots = ca.map_or_else(
        || Arc::new(RootCertStore::empty()),
        |c| Arc::clone(&c.roots),
    );
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(refused)?
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(refused)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// What the transports handshake with on one realm.
#[derive(Clone, Debug)]
pub struct RealmConfigs {
    /// Presented on the realm's TLS listeners; `None` when the realm has
    /// no certificate (its TLS listeners then refuse every handshake).
    pub server: Option<Arc<ServerConfig>>,
    /// Used for TLS connections the realm opens to a destination that is
    /// not a TLS trunk (a caller whose connection closed): the realm's CA
    /// set verifies the server, by its IP address.
    pub client: Arc<ClientConfig>,
}

/// How the transports open TLS to one trunk.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// The trunk's name (logs).
    pub trunk: String,
    /// The client configuration (the trunk's CA set, the certificate to
    /// present).
    pub config: Arc<ClientConfig>,
    /// The name the trunk's certificate must carry.
    pub server_name: ServerName<'static>,
}

/// Whose certificate an expiry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A realm (its listeners' certificate, its client CA set).
    Realm,
    /// A trunk (its client certificate, its CA set).
    Trunk,
}

impl Owner {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Owner::Realm => "realm",
            Owner::Trunk => "trunk",
        }
    }
}

/// What a certificate is used as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Presented by the SBC.
    Certificate,
    /// A trust anchor the SBC verifies peers with.
    Ca,
}

impl Role {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Certificate => "certificate",
            Role::Ca => "ca",
        }
    }
}

/// One certificate in use and when it expires (the expiry metric).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// Realm or trunk.
    pub owner: Owner,
    /// Its name.
    pub name: String,
    /// Presented, or trusted.
    pub role: Role,
    /// The certificate's subject.
    pub subject: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// CA sets larger than this are taken for public bundles: their expiry is
/// not exported.
pub const MAX_EXPORTED_CAS: usize = 8;

/// Every TLS configuration the transports need, built from a [`Config`].
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    realms: HashMap<String, RealmConfigs>,
    peers: HashMap<SocketAddr, PeerTls>,
    expiries: Vec<Expiry>,
    lines: Vec<String>,
}

/// A TLS file problem, with where in the configuration it is named.
#[derive(Debug)]
pub struct TlsProblem {
    /// `realm` or `trunk`.
    pub owner: Owner,
    /// Index in `[[realm]]` or `[[trunk]]`.
    pub index: usize,
    /// The field under `tls` (`certificate`, `private_key`, `ca`,
    /// `server_name`).
    pub field: &'static str,
    /// What is wrong.
    pub error: TlsFileError,
}

impl TlsSettings {
    /// Reads every certificate, key and CA set `config` names and builds
    /// the configurations; trunks given by a name are keyed by the
    /// addresses `targets` gives for them (what DNS resolved so far; none
    /// yet: the trunk is skipped by routing anyway, and the daemon builds
    /// the settings again when its targets change). Every problem is
    /// returned, not just the first.
    pub fn from_config(
        config: &Config,
        targets: &dyn Fn(&crate::config::Trunk) -> Vec<SocketAddr>,
        now: SystemTime,
    ) -> Result<TlsSettings, Vec<TlsProblem>> {
        let mut settings = TlsSettings::default();
        let mut problems = Vec::new();
        let mut realm_identity: HashMap<&str, Identity> = HashMap::new();
        for (index, realm) in config.realms.iter().enumerate() {
            let Some(tls) = &realm.tls else {
                continue;
            };
            let problem = |field, error| TlsProblem {
                owner: Owner::Realm,
                index,
                field,
                error,
            };
            let identity = match Identity::load(&tls.certificate, &tls.private_key, now, true) {
                Ok(identity) => identity,
                Err((file, error)) => {
                    problems.push(problem(pair_field(file), error));
                    continue;
                }
            };
            let ca = match tls.ca.as_deref().map(|path| CaSet::load(path, now)) {
                Some(Ok(ca)) => Some(ca),
                Some(Err(error)) => {
                    problems.push(problem("ca", error));
                    continue;
                }
                None => None,
            };
            let built = server_config(&identity, ca.as_ref(), tls.require_client_certificate)
                .and_then(|server| Ok((server, client_config(ca.as_ref(), Some(&identity))?)));
            let (server, client) = match built {
                Ok(built) => built,
                Err(error) => {
                    problems.push(problem("certificate", error));
                    continue;
                }
            };
            settings.expiries.push(Expiry {
                owner: Owner::Realm,
                name: realm.name.clone(),
                role: Role::Certificate,
                subject: identity.info.subject.clone(),
                not_after: identity.info.not_after,
            });
            let verifies = match (&ca, tls.require_client_certificate) {
                (Some(ca), true) => {
                    format!("requires a client certificate issued by {}", ca_names(ca))
                }
                (Some(ca), false) => format!(
                    "verifies client certificates issued by {} when offered",
                    ca_names(ca)
                ),
                (None, _) => "asks for no client certificate".to_owned(),
            };
            for listener in realm
                .listen
                .iter()
                .filter(|l| l.transport == Transport::Tls)
            {
                settings.lines.push(format!(
                    "realm \"{}\" tls {} presents {}; {verifies}",
                    realm.name,
                    listener.address,
                    identity.info.describe()
                ));
            }
            if let Some(ca) = &ca {
                settings.push_ca(Owner::Realm, &realm.name, ca);
            }
            settings.realms.insert(
                realm.name.clone(),
                RealmConfigs {
                    server: Some(server),
                    client,
                },
            );
            realm_identity.insert(realm.name.as_str(), identity);
        }
        for (index, trunk) in config.trunks.iter().enumerate() {
            if !trunk.may_speak_tls() {
                continue;
            }
            let problem = |field, error| TlsProblem {
                owner: Owner::Trunk,
                index,
                field,
                error,
            };
            let tls = trunk.tls.clone().unwrap_or_default();
            let own = match (&tls.certificate, &tls.private_key) {
                (Some(cert), Some(key)) => match Identity::load(cert, key, now, false) {
                    Ok(identity) => Some(identity),
                    Err((file, error)) => {
                        problems.push(problem(pair_field(file), error));
                        continue;
                    }
                },
                _ => None,
            };
            let ca = match tls.ca.as_deref().map(|path| CaSet::load(path, now)) {
                Some(Ok(ca)) => Some(ca),
                Some(Err(error)) => {
                    problems.push(problem("ca", error));
                    continue;
                }
                None => None,
            };
            let name = tls
                .server_name
                .clone()
                .unwrap_or_else(|| match &trunk.address {
                    PeerAddress::Ip(addr) => addr.ip().to_string(),
                    PeerAddress::Host { host, .. } => host.clone(),
                    // RFC 5922 §4: the domain the trunk was given by, not
                    // the SRV target's host name.
                    PeerAddress::Name { host } => host.clone(),
                });
            let server_name = match ServerName::try_from(name.clone()) {
                Ok(server_name) => server_name,
                Err(_) => {
                    problems.push(problem(
                        "server_name",
                        TlsFileError::BadServerName { name: name.clone() },
                    ));
                    continue;
                }
            };
            // The trunk's own certificate, else the realm's: the interface
            // certificate is what a carrier asking for mutual TLS expects.
            let presented = own
                .as_ref()
                .or_else(|| realm_identity.get(trunk.realm.as_str()));
            let config = match client_config(ca.as_ref(), presented) {
                Ok(config) => config,
                Err(error) => {
                    problems.push(problem("ca", error));
                    continue;
                }
            };
            let presents = match (&own, presented) {
                (Some(own), _) => format!("presents {} if asked", own.info.describe()),
                (None, Some(realm)) => format!(
                    "presents realm \"{}\"'s {} if asked",
                    trunk.realm,
                    realm.info.describe()
                ),
                (None, None) => "has no client certificate to present".to_owned(),
            };
            let verifies = match &ca {
                Some(ca) => format!("verifies the server as \"{name}\" against {}", ca_names(ca)),
                None => "has no CA set to verify the server with".to_owned(),
            };
            settings.lines.push(format!(
                "trunk \"{}\" tls {} {verifies}; {presents}",
                trunk.name, trunk.address
            ));
            if let Some(own) = &own {
                settings.expiries.push(Expiry {
                    owner: Owner::Trunk,
                    name: trunk.name.clone(),
                    role: Role::Certificate,
                    subject: own.info.subject.clone(),
                    not_after: own.info.not_after,
                });
            }
            if let Some(ca) = &ca {
                settings.push_ca(Owner::Trunk, &trunk.name, ca);
            }
            let addrs = match &trunk.address {
                PeerAddress::Ip(addr) => vec![*addr],
                PeerAddress::Host { .. } | PeerAddress::Name { .. } => targets(trunk),
            };
            for addr in addrs {
                settings.peers.insert(
                    addr,
                    PeerTls {
                        trunk: trunk.name.clone(),
                        config: config.clone(),
                        server_name: server_name.clone(),
                    },
                );
            }
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems)
        }
    }

    fn push_ca(&mut self, owner: Owner, name: &str, ca: &CaSet) {
        // A public bundle (the system's roots) is the OS's to keep up to
        // date, and a root in it that lapses is no reason to page anyone:
        // only a small, operator-made set is exported.
        if ca.infos.len() > MAX_EXPORTED_CAS {
            return;
        }
        for info in &ca.infos {
            self.expiries.push(Expiry {
                owner,
                name: name.to_owned(),
                role: Role::Ca,
                subject: info.subject.clone(),
                not_after: info.not_after,
            });
        }
    }

    /// The configuration realm `realm`'s TLS listeners accept with.
    pub fn server(&self, realm: &str) -> Option<Arc<ServerConfig>> {
        self.realms.get(realm).and_then(|r| r.server.clone())
    }

    /// How realm `realm` opens TLS to `to`: the trunk's settings when `to`
    /// is a TLS trunk, else the realm's own, verifying `to`'s IP address.
    /// `None` when the realm has no TLS at all.
    pub fn client(
        &self,
        realm: &str,
        to: SocketAddr,
    ) -> Option<(Arc<ClientConfig>, ServerName<'static>)> {
        if let Some(peer) = self.peers.get(&to) {
            return Some((Arc::clone(&peer.config), peer.server_name.clone()));
        }
        let realm = self.realms.get(realm)?;
        Some((
            Arc::clone(&realm.client),
            ServerName::IpAddress(to.ip().into()),
        ))
    }

    /// Every certificate in use and when it expires.
    pub fn expiries(&self) -> &[Expiry] {
        &self.expiries
    }

    /// One line per TLS listener and trunk: what it presents and verifies
    /// (`check-config` prints them).
    pub fn describe(&self) -> &[String] {
        &self.lines
    }
}

fn pair_field(file: PairFile) -> &'static str {
    match file {
        PairFile::Certificate => "certificate",
        PairFile::PrivateKey => "private_key",
    }
}

fn ca_names(ca: &CaSet) -> String {
    let names: Vec<String> = ca
        .infos
        .iter()
        .map(|i| format!("\"{}\"", i.subject))
        .collect();
    format!("CA {}", names.join(", "))
}

#[cfg(test)]
mod tests;
