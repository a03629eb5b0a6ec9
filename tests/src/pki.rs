//! A throwaway public key infrastructure for the TLS tests: a CA and the
//! certificates it issues, generated on the spot (rcgen, ECDSA P-256) into
//! a directory the test owns. Nothing here is ever checked in.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate and key written as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The certificate (then the CA's, when [`Ca::issue_chain`] made it).
    pub certificate: PathBuf,
    /// Its private key (PKCS#8).
    pub private_key: PathBuf,
}

/// A calendar date: (year, month, day).
pub type Ymd = (i32, u8, u8);

/// What a certificate to issue looks like.
#[derive(Clone, Debug)]
pub struct Leaf<'a> {
    /// File names: `<stem>.pem` and `<stem>.key`.
    pub stem: &'a str,
    /// The common name.
    pub common_name: &'a str,
    /// subjectAltNames: IP literals become IP names, the rest DNS names.
    pub names: &'a [&'a str],
    /// Validity as (year, month, day) pairs; `None`: from yesterday for a
    /// year.
    pub validity: Option<(Ymd, Ymd)>,
}

/// A test CA: its key, its certificate and the PEM file of that
/// certificate.
pub struct Ca {
    dir: PathBuf,
    key: KeyPair,
    cert: Certificate,
    /// `<dir>/<name>-ca.pem`.
    pub path: PathBuf,
}

fn ymd(at: Ymd) -> time::OffsetDateTime {
    rcgen::date_time_ymd(at.0, at.1, at.2)
}

impl Ca {
    /// Makes a CA named `name` (its common name) and writes its
    /// certificate to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("generate a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).expect("write the CA certificate");
        Ca {
            dir: dir.to_owned(),
            key,
            cert,
            path,
        }
    }

    /// Issues a certificate for `names` (DNS names or IP literals) valid
    /// from yesterday for a year, written to `<stem>.pem` and `<stem>.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Issued {
        self.issue_leaf(&Leaf {
            stem,
            common_name: names.first().copied().unwrap_or(stem),
            names,
            validity: None,
        })
    }

    /// Issues the certificate `leaf` describes.
    pub fn issue_leaf(&self, leaf: &Leaf<'_>) -> Issued {
        let key = KeyPair::generate().expect("generate a key");
        let names: Vec<String> = leaf.names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("certificate params");
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name);
        if let Some((from, to)) = leaf.validity {
            params.not_before = ymd(from);
            params.not_after = ymd(to);
        } else {
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(365);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign the certificate");
        let issued = Issued {
            certificate: self.dir.join(format!("{}.pem", leaf.stem)),
            private_key: self.dir.join(format!("{}.key", leaf.stem)),
        };
        std::fs::write(&issued.certificate, cert.pem()).expect("write the certificate");
        std::fs::write(&issued.private_key, key.serialize_pem()).expect("write the key");
        issued
    }
}
