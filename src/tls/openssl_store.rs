//! This host's trust store read as OpenSSL reads it, which is what Microsoft's ODBC Driver 18
//! on Linux trusts: the CA file (`SSL_CERT_FILE`, else the bundle openssl-probe finds) loaded
//! whole, and the CA directories (`SSL_CERT_DIR`, a `:`-separated list, else the directory
//! openssl-probe finds) never read up front but looked up by the issuer's name hash when a
//! chain is judged: files `<hash>.0`, `<hash>.1`, ... as `openssl rehash` (c_rehash) names
//! them. A CA file in a directory under another name is not found, as by OpenSSL.
//!
//! Why not rustls-native-certs (which reads every file of the directory): on Debian that is
//! the ~146 certificates of the bundle once more, ~290 statx and ~150 openat, ~2.8 ms of CPU
//! per run, a third of a whole `dtcprobe check mssql://...` (issue 26, bench case c).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::CertificateDer;
use sha1::{Digest, Sha1};
use x509_parser::asn1_rs::{Class, ToDer};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// Where the store is: `SSL_CERT_FILE` / `SSL_CERT_DIR` when either is set (then only those,
/// as rustls-native-certs does), else openssl-probe's bundle and directories.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    pub file: Option<PathBuf>,
    pub dirs: Vec<PathBuf>,
}

impl Locations {
    pub fn of_this_host() -> Locations {
        let file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        let dirs: Vec<PathBuf> = match std::env::var_os("SSL_CERT_DIR") {
            Some(dirs) => std::env::split_paths(&dirs)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            None => Vec::new(),
        };
        if file.is_some() || !dirs.is_empty() {
            return Locations { file, dirs };
        }
        let probed = openssl_probe::probe();
        Locations {
            file: probed.cert_file,
            dirs: probed.cert_dir,
        }
    }
}

/// The certificates of the CA file, every one (unreadable file: none, as rustls-native-certs
/// counts it).
pub fn file_certificates(file: Option<&Path>) -> Vec<CertificateDer<'static>> {
    let Some(path) = file else {
        return Vec::new();
    };
    match std::fs::read(path) {
        Ok(pem) => pem_certificates(&pem),
        Err(_) => Vec::new(),
    }
}

/// The `CERTIFICATE` blocks of a PEM file, as rustls's PEM reader finds them (other labels,
/// text between blocks, and blocks that are not base64 are passed over).
///
/// Not rustls-pki-types's reader: it decodes base64 in constant time, as private keys need,
/// and the ~146 public certificates of Debian's bundle took ~0.9 ms of CPU that way, a tenth of
/// a whole TLS login's run (issue 26, bench case c); this is a general-purpose decoder.
pub fn pem_certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use base64::Engine;
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = pem;
    let mut text = Vec::new();
    while let Some(start) = find(rest, BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let Some(end) = find(body, END) else {
            break;
        };
        text.clear();
        text.extend(
            body[..end]
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace()),
        );
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&text) {
            certs.push(CertificateDer::from(der));
        }
        rest = &body[end + END.len()..];
    }
    certs
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// The CA directories, looked up by name hash; what a run found is kept for the run.
#[derive(Debug, Default)]
pub struct CaDirs {
    dirs: Vec<PathBuf>,
    found: Mutex<HashMap<u32, Arc<Vec<CertificateDer<'static>>>>>,
}

/// How many files one hash may name (`<hash>.0` ... `<hash>.N`): OpenSSL stops at the first
/// missing one; this bounds the loop should a directory be odd.
const FILES_PER_HASH: usize = 256;
/// How far up from the presented chain the directories are searched (issuer of an issuer ...).
const LEVELS: usize = 8;

impl CaDirs {
    pub fn new(dirs: Vec<PathBuf>) -> CaDirs {
        CaDirs {
            dirs,
            found: Mutex::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// The CA certificates the directories hold for the issuers of `chain`, and for their
    /// issuers in turn (an intermediate found there is a trust anchor to rustls, as to
    /// OpenSSL's store lookup, and its own CA is looked up too).
    pub fn issuers_of(&self, chain: &[CertificateDer<'_>]) -> Vec<CertificateDer<'static>> {
        let mut found: Vec<CertificateDer<'static>> = Vec::new();
        let mut asked: Vec<u32> = Vec::new();
        let mut next: Vec<u32> = chain.iter().filter_map(issuer_hash).collect();
        for _ in 0..LEVELS {
            let mut after = Vec::new();
            for hash in next {
                if asked.contains(&hash) {
                    continue;
                }
                asked.push(hash);
                for cert in self.lookup(hash).iter() {
                    if !found.contains(cert) {
                        after.extend(issuer_hash(cert));
                        found.push(cert.clone());
                    }
                }
            }
            if after.is_empty() {
                break;
            }
            next = after;
        }
        found
    }

    /// The certificates of `<dir>/<hash>.<n>` in every directory (PEM, as OpenSSL's hashed
    /// directory lookup reads them), once per run.
    fn lookup(&self, hash: u32) -> Arc<Vec<CertificateDer<'static>>> {
        if let Some(hit) = self.found.lock().ok().and_then(|f| f.get(&hash).cloned()) {
            return hit;
        }
        let mut certs = Vec::new();
        for dir in &self.dirs {
            for n in 0..FILES_PER_HASH {
                let Ok(pem) = std::fs::read(dir.join(format!("{hash:08x}.{n}"))) else {
                    break;
                };
                certs.extend(pem_certificates(&pem));
            }
        }
        let certs = Arc::new(certs);
        if let Ok(mut found) = self.found.lock() {
            found.insert(hash, certs.clone());
        }
        certs
    }
}

fn issuer_hash(cert: &CertificateDer<'_>) -> Option<u32> {
    let (_, cert) = X509Certificate::from_der(cert.as_ref()).ok()?;
    name_hash(cert.issuer())
}

/// The subject's hash, as `openssl x509 -noout -subject_hash` prints it.
#[cfg(test)]
fn subject_hash(cert: &[u8]) -> Option<u32> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    name_hash(cert.subject())
}

/// OpenSSL's `X509_NAME_hash_ex` (crypto/x509/x_name.c `x509_name_canon`): SHA-1 over the
/// canonical encoding of the name, its first four bytes as a little-endian number. The
/// canonical encoding: every RDN as a DER SET OF its AVAs, each AVA's string value (UTF8, BMP,
/// Universal, Printable, T61, IA5, Visible) turned into a UTF8String ([`canonical_text`]),
/// other values as they are; the SETs concatenated, without the outer SEQUENCE. `None` for a
/// value OpenSSL cannot convert (it fails the lookup too).
pub fn name_hash(name: &X509Name<'_>) -> Option<u32> {
    let mut canon = Vec::new();
    for rdn in name.iter_rdn() {
        let mut avas = Vec::new();
        for ava in rdn.iter() {
            let value = ava.attr_value();
            let tag = value.header.tag().0;
            let value_der = if value.header.class() == Class::Universal && CANON_TAGS.contains(&tag)
            {
                der_tlv(UTF8_STRING, &canonical_text(tag, value.data)?)
            } else {
                value.to_der_vec().ok()?
            };
            let mut body = der_tlv(OBJECT_IDENTIFIER, ava.attr_type().as_bytes());
            body.extend_from_slice(&value_der);
            avas.push(der_tlv(SEQUENCE, &body));
        }
        // DER SET OF: elements in the order of their encodings.
        avas.sort();
        canon.extend(der_tlv(SET, &avas.concat()));
    }
    let digest = Sha1::digest(&canon);
    Some(u32::from_le_bytes([
        digest[0], digest[1], digest[2], digest[3],
    ]))
}

const UTF8_STRING: u32 = 12;
const OBJECT_IDENTIFIER: u32 = 6;
const SEQUENCE: u32 = 0x30;
const SET: u32 = 0x31;
/// UTF8String, PrintableString, T61String, IA5String, VisibleString, UniversalString,
/// BMPString: OpenSSL's ASN1_MASK_CANON.
const CANON_TAGS: [u32; 7] = [12, 19, 20, 22, 26, 28, 30];

/// OpenSSL's `asn1_string_canon`: the value as UTF-8 (T61 and the one-byte types read as
/// Latin-1, as ASN1_STRING_to_UTF8 does), ASCII whitespace trimmed at both ends, every inner
/// run of it one space, ASCII letters lowercased; other bytes unchanged.
fn canonical_text(tag: u32, data: &[u8]) -> Option<Vec<u8>> {
    let text: String = match tag {
        12 => std::str::from_utf8(data).ok()?.to_owned(),
        30 => {
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| (c.len() == 2).then(|| u16::from_be_bytes([c[0], c[1]])))
                .collect::<Option<_>>()?;
            units
                .into_iter()
                .map(|u| char::from_u32(u32::from(u)))
                .collect::<Option<_>>()?
        }
        28 => data
            .chunks(4)
            .map(|c| {
                let c: [u8; 4] = c.try_into().ok()?;
                char::from_u32(u32::from_be_bytes(c))
            })
            .collect::<Option<_>>()?,
        _ => data.iter().map(|&b| char::from(b)).collect(),
    };
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| !space(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    let mut out = Vec::with_capacity(end - start);
    let mut in_space = false;
    for b in &bytes[start..end] {
        if space(b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b.to_ascii_lowercase());
            in_space = false;
        }
    }
    Some(out)
}

/// A DER TLV with a one-byte tag.
fn der_tlv(tag: u32, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag as u8];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use std::process::Command;

    /// The fast reader finds what rustls's own PEM reader finds: in this host's bundle, and in
    /// a file with CRLF line ends, other labels, text between blocks and a block that is not
    /// base64.
    #[test]
    fn pem_certificates_reads_what_rustls_reads() {
        let theirs = |pem: &[u8]| -> Vec<CertificateDer<'static>> {
            CertificateDer::pem_slice_iter(pem).flatten().collect()
        };
        let at = Locations::of_this_host();
        if let Some(bundle) = at.file.as_deref().and_then(|f| std::fs::read(f).ok()) {
            let ours = pem_certificates(&bundle);
            assert!(!ours.is_empty());
            assert_eq!(ours, theirs(&bundle));
        }
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let mut odd = String::from("a comment line\r\n");
        odd.push_str(&a.cert.pem().replace('\n', "\r\n"));
        odd.push_str("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        odd.push_str("-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n");
        odd.push_str("between\n");
        odd.push_str(&b.cert.pem());
        odd.push_str("-----BEGIN CERTIFICATE-----\nMIIB\n");
        let ours = pem_certificates(odd.as_bytes());
        assert_eq!(ours.len(), 2, "{ours:?}");
        assert_eq!(ours[0].as_ref(), a.cert.der().as_ref());
        assert_eq!(ours[1].as_ref(), b.cert.der().as_ref());
        assert_eq!(ours, theirs(odd.as_bytes()));
    }

    fn openssl_subject_hash(pem_path: &Path) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-subject_hash", "-in"])
            .arg(pem_path)
            .output()
            .expect("openssl CLI (scripts/install-test-deps installs it)");
        assert!(out.status.success(), "openssl x509 {pem_path:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn ours(pem: &[u8]) -> String {
        let der = CertificateDer::from_pem_slice(pem).expect("one PEM certificate");
        format!("{:08x}", subject_hash(der.as_ref()).expect("a hash"))
    }

    #[test]
    fn name_hash_is_openssls_for_this_hosts_certificates() {
        let dir = Path::new("/etc/ssl/certs");
        let Ok(entries) = std::fs::read_dir(dir) else {
            eprintln!("SKIP: no {dir:?} on this host");
            return;
        };
        let mut compared = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(pem) = std::fs::read(&path) else {
                continue;
            };
            // Only files holding exactly one certificate (not the bundle).
            if CertificateDer::pem_slice_iter(&pem).flatten().count() != 1 {
                continue;
            }
            assert_eq!(ours(&pem), openssl_subject_hash(&path), "{path:?}");
            compared += 1;
        }
        if compared == 0 {
            eprintln!("SKIP: no certificate file in {dir:?}");
        }
    }

    /// Names made to exercise the canonical form: mixed case, extra and inner whitespace,
    /// several AVAs in one RDN, UTF8/Printable/IA5/BMP/T61 values, non-ASCII text.
    #[test]
    fn name_hash_is_openssls_for_awkward_names() {
        let tmp = tempfile::tempdir().unwrap();
        let mut made = Vec::new();
        // rcgen: the string types.
        use rcgen::{DistinguishedName, DnType, DnValue};
        let names: Vec<Vec<(DnType, DnValue)>> = vec![
            vec![
                (
                    DnType::CommonName,
                    DnValue::Utf8String("  SQL   Server\tCA  ".into()),
                ),
                (
                    DnType::OrganizationName,
                    DnValue::PrintableString("Contoso  LTD".try_into().unwrap()),
                ),
                (
                    DnType::CountryName,
                    DnValue::PrintableString("DE".try_into().unwrap()),
                ),
            ],
            vec![
                (
                    DnType::CommonName,
                    DnValue::Ia5String("Mixed.Case.EXAMPLE".try_into().unwrap()),
                ),
                (
                    DnType::OrganizationalUnitName,
                    DnValue::Utf8String("Ünïcödé  Straße".into()),
                ),
            ],
            vec![
                (
                    DnType::CommonName,
                    DnValue::BmpString("BMP  Name Ä".try_into().unwrap()),
                ),
                (
                    DnType::LocalityName,
                    DnValue::TeletexString("T61 Name".try_into().unwrap()),
                ),
            ],
        ];
        for (i, name) in names.into_iter().enumerate() {
            let mut dn = DistinguishedName::new();
            for (t, v) in name {
                dn.push(t, v);
            }
            let mut params = rcgen::CertificateParams::new(vec!["x.example".into()]).unwrap();
            params.distinguished_name = dn;
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let path = tmp.path().join(format!("rcgen{i}.pem"));
            std::fs::write(&path, cert.pem()).unwrap();
            made.push(path);
        }
        // openssl req: several AVAs in one RDN (rcgen makes one AVA per RDN).
        for (i, subject) in [
            "/CN=Multi  Value+OU=Second  AVA/O=ACME   corp",
            "/O=Zeta+CN=alpha+C=US/CN=  Trailing Space  ",
        ]
        .iter()
        .enumerate()
        {
            let path = tmp.path().join(format!("multi{i}.pem"));
            let key = tmp.path().join(format!("multi{i}.key"));
            let out = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ])
                .args(["-nodes", "-days", "1", "-multivalue-rdn", "-subj", subject])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&path)
                .output()
                .expect("openssl CLI");
            assert!(out.status.success(), "openssl req {subject}: {out:?}");
            made.push(path);
        }
        for path in made {
            let pem = std::fs::read(&path).unwrap();
            assert_eq!(ours(&pem), openssl_subject_hash(&path), "{path:?}");
        }
    }

    #[test]
    fn canonical_text_trims_collapses_and_lowercases_ascii_only() {
        assert_eq!(
            canonical_text(12, " \tAb  C\r\nD É ".as_bytes()).unwrap(),
            "ab c dÉ".replace("dÉ", "d É").as_bytes()
        );
        assert_eq!(canonical_text(12, b"   ").unwrap(), b"");
        assert_eq!(canonical_text(20, &[0x41, 0xe9]).unwrap(), "aé".as_bytes());
        assert!(canonical_text(12, &[0xff]).is_none());
    }

    #[test]
    fn a_directory_is_looked_up_by_hash_and_only_by_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Dir CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let hash = subject_hash(ca.der()).unwrap();
        // Under another name: not found.
        std::fs::write(tmp.path().join("dir-ca.pem"), ca.pem()).unwrap();
        let dirs = CaDirs::new(vec![tmp.path().to_owned()]);
        assert!(dirs.issuers_of(&[ca.der().clone()]).is_empty());
        // As `<hash>.0`: found (a fresh run; the first kept its miss).
        std::fs::write(tmp.path().join(format!("{hash:08x}.0")), ca.pem()).unwrap();
        let dirs = CaDirs::new(vec![tmp.path().to_owned()]);
        assert_eq!(dirs.issuers_of(&[ca.der().clone()]), vec![ca.der().clone()]);
    }
}
