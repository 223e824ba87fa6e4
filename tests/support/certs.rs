//! Server certificates for the certificate report and hop `revocation` (tests/cert_report.rs):
//! made with rcgen at test time, self-signed or from a test CA, with chosen names, validity
//! and CRL / OCSP URLs.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CustomExtension, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A server certificate with its chain and key.
pub struct ServerCert {
    /// DER, the server's own first, then the CA's.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The chain as PEM (a PostgreSQL ssl_cert_file).
    pub chain_pem: String,
    pub key_pem: String,
}

impl ServerCert {
    /// For [`super::tds_peer::PeerConfig::certificate`].
    pub fn for_peer(&self) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
        Some((self.chain.clone(), self.key_der.clone()))
    }
}

/// What goes into a server certificate.
pub struct Spec<'a> {
    pub names: &'a [&'a str],
    /// Days from now; negative: in the past.
    pub not_before_days: i64,
    pub not_after_days: i64,
    pub crl_urls: &'a [&'a str],
    pub ocsp_url: Option<&'a str>,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            names: &["127.0.0.1"],
            not_before_days: -30,
            not_after_days: 365,
            crl_urls: &[],
            ocsp_url: None,
        }
    }
}

fn params(spec: &Spec<'_>) -> CertificateParams {
    let mut p =
        CertificateParams::new(spec.names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let now = OffsetDateTime::now_utc();
    p.not_before = now + Duration::days(spec.not_before_days);
    p.not_after = now + Duration::days(spec.not_after_days);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, spec.names[0]);
    if !spec.crl_urls.is_empty() {
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: spec.crl_urls.iter().map(|u| u.to_string()).collect(),
        }];
    }
    if let Some(url) = spec.ocsp_url {
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 1, 1],
            aia_ocsp(url),
        )];
    }
    p
}

/// authorityInfoAccess with one OCSP URL: SEQUENCE { SEQUENCE { id-ad-ocsp, [6] URI } }.
fn aia_ocsp(url: &str) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128);
        let mut v = vec![tag, body.len() as u8];
        v.extend_from_slice(body);
        v
    }
    let oid = tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01]);
    let uri = tlv(0x86, url.as_bytes());
    let desc = tlv(0x30, &[oid, uri].concat());
    tlv(0x30, &desc)
}

/// A self-signed server certificate.
pub fn self_signed(spec: &Spec<'_>) -> ServerCert {
    let key = KeyPair::generate().unwrap();
    let cert = params(spec).self_signed(&key).unwrap();
    ServerCert {
        chain: vec![cert.der().to_vec()],
        key_der: key.serialize_der(),
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A test certificate authority.
pub struct TestCa {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "dtcprobe test CA");
        let cert = p.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A server certificate this CA signed, with the CA in its chain.
    pub fn issue(&self, spec: &Spec<'_>) -> ServerCert {
        let key = KeyPair::generate().unwrap();
        let mut p = params(spec);
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        ServerCert {
            chain: vec![cert.der().to_vec(), self.cert.der().to_vec()],
            key_der: key.serialize_der(),
            chain_pem: format!("{}{}", cert.pem(), self.cert.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    /// An empty CRL signed by this CA (DER).
    pub fn crl_der(&self) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .der()
        .to_vec()
    }
}
