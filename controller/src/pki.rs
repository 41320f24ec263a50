//! The controller's small PKI: one CA per fleet, a server certificate for
//! the controller, and a client certificate per agent, whose common name is
//! the agent's host name. Mutual TLS then answers both "is this our
//! controller" and "which host is this" without passwords.
//!
//! Layout under the data directory:
//! `pki/ca.pem`, `pki/ca.key`, `pki/server.pem`, `pki/server.key`, and
//! `pki/agents/<host>.bundle` (CA cert + agent cert + agent key, one PEM file
//! to copy to the host). `pki/` is 0700; keys and bundles are mode 0600.
//!
//! Every agent certificate gets a random 128-bit serial; `init` and
//! `enroll` record it in the store (see [`Issued`]), which is what lets the
//! daemon refuse a revoked certificate.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir} already holds a CA (pki/ca.pem); refusing to overwrite it")]
    Exists { dir: PathBuf },
    #[error("{dir} has no CA: run `backstop init --data {dir}` first")]
    NoCa { dir: PathBuf },
    #[error(
        "host name {0:?} is not valid: use letters, digits, '-', '.' and '_' (1-253 characters)"
    )]
    BadHost(String),
    #[error("{what}: {source}")]
    Cert { what: String, source: rcgen::Error },
    #[error("the OS random number generator: {0}")]
    Random(String),
}

/// An agent certificate as issued: what the store records.
#[derive(Debug, Clone)]
pub struct Issued {
    pub host: String,
    /// Lowercase hex of the serial number, as [`serial_of`] reads it back.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Issued {
    pub fn to_row(&self) -> crate::store::CertRow {
        let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        crate::store::CertRow {
            serial: self.serial.clone(),
            host: self.host.clone(),
            not_before_ms: ms(self.not_before),
            not_after_ms: ms(self.not_after),
            revoked_at_ms: None,
        }
    }
}

/// `n` bytes from the OS random number generator (getrandom(2)).
pub fn os_random<const N: usize>() -> Result<[u8; N], PkiError> {
    use rand::TryRngCore;
    let mut b = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| PkiError::Random(e.to_string()))?;
    Ok(b)
}

/// Names the controller's certificate is valid for, besides any given.
pub const SERVER_NAME: &str = "backstop-controller";

pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(data: &Path) -> Self {
        Pki {
            dir: data.join("pki"),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn agent_bundle(&self, host: &str) -> PathBuf {
        self.dir.join("agents").join(format!("{host}.bundle"))
    }
}

pub fn valid_host(host: &str) -> Result<(), PkiError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadHost(host.to_string()))
    }
}

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Cert {
        what: what.to_string(),
        source,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write a file with the given mode, creating it exclusively (never
/// following or replacing what is there).
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err(parent))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(contents.as_bytes()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "backstop");
    dn.push(DnType::CommonName, cn);
    dn
}

/// What `backstop init` made.
#[derive(Debug)]
pub struct Initialised {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub agent_bundle: PathBuf,
    pub agent_cert: Issued,
}

/// Create the CA, the controller's certificate (for `SERVER_NAME`,
/// localhost, loopback and `extra_names`) and a first agent bundle.
pub fn init(
    data: &Path,
    first_host: &str,
    extra_names: &[String],
) -> Result<Initialised, PkiError> {
    valid_host(first_host)?;
    let pki = Pki::new(data);
    if pki.ca_cert().exists() {
        return Err(PkiError::Exists {
            dir: data.to_path_buf(),
        });
    }
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().map_err(cert_err("generating the CA key"))?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = dn("backstop CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(3650);
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(cert_err("signing the CA"))?;

    let server_key = KeyPair::generate().map_err(cert_err("generating the server key"))?;
    let mut names = vec![SERVER_NAME.to_string(), "localhost".to_string()];
    names.extend(extra_names.iter().cloned());
    let mut server = CertificateParams::new(names.clone()).map_err(cert_err("server names"))?;
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    server.distinguished_name = dn(SERVER_NAME);
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now - Duration::hours(1);
    server.not_after = now + Duration::days(825);
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .map_err(cert_err("signing the server certificate"))?;

    write_new(&pki.ca_key(), &ca_key.serialize_pem(), 0o600)?;
    write_new(&pki.ca_cert(), &ca_cert.pem(), 0o644)?;
    write_new(&pki.server_key(), &server_key.serialize_pem(), 0o600)?;
    write_new(&pki.server_cert(), &server_cert.pem(), 0o644)?;
    let agent_bundle = pki.agent_bundle(first_host);
    let agent_cert = enroll_with(
        &ca_cert,
        &ca_key,
        first_host,
        &agent_bundle,
        now,
        now + Duration::days(825),
    )?;
    Ok(Initialised {
        ca: pki.ca_cert(),
        server_cert: pki.server_cert(),
        agent_bundle,
        agent_cert,
    })
}

/// The CA as a signer, read back from the data directory.
pub fn load_ca(data: &Path) -> Result<(rcgen::Certificate, KeyPair), PkiError> {
    let pki = Pki::new(data);
    if !pki.ca_cert().exists() {
        return Err(PkiError::NoCa {
            dir: data.to_path_buf(),
        });
    }
    let cert_pem = std::fs::read_to_string(pki.ca_cert()).map_err(io_err(&pki.ca_cert()))?;
    let key_pem = std::fs::read_to_string(pki.ca_key()).map_err(io_err(&pki.ca_key()))?;
    let key = KeyPair::from_pem(&key_pem).map_err(cert_err("reading the CA key"))?;
    let params =
        CertificateParams::from_ca_cert_pem(&cert_pem).map_err(cert_err("reading the CA cert"))?;
    // Re-signing the same parameters with the same key gives a certificate
    // with the CA's name and key: all a signer needs.
    let cert = params
        .self_signed(&key)
        .map_err(cert_err("loading the CA"))?;
    Ok((cert, key))
}

/// `backstop enroll`: a bundle for one more host.
pub fn enroll(data: &Path, host: &str, out: &Path, valid_days: i64) -> Result<Issued, PkiError> {
    valid_host(host)?;
    let (ca_cert, ca_key) = load_ca(data)?;
    let now = OffsetDateTime::now_utc();
    enroll_with(
        &ca_cert,
        &ca_key,
        host,
        out,
        now,
        now + Duration::days(valid_days),
    )
}

/// Sign an agent certificate valid from `not_before` to `not_after` and
/// write the bundle. Public so tests can make expired certificates (which
/// the store then has no record of).
pub fn enroll_with(
    ca_cert: &rcgen::Certificate,
    ca_key: &KeyPair,
    host: &str,
    out: &Path,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued, PkiError> {
    let key = KeyPair::generate().map_err(cert_err("generating the agent key"))?;
    let mut params =
        CertificateParams::new(vec![host.to_string()]).map_err(cert_err("agent host name"))?;
    // 128 random bits, the top one clear so the DER integer stays positive
    // and 16 bytes long (RFC 5280 4.1.2.2 allows up to 20 octets).
    let mut serial = os_random::<16>()?;
    serial[0] &= 0x7f;
    serial[0] |= 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.distinguished_name = dn(host);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_before - Duration::hours(1);
    params.not_after = not_after;
    let cert = params
        .signed_by(&key, ca_cert, ca_key)
        .map_err(cert_err("signing the agent certificate"))?;
    let bundle = format!("{}{}{}", ca_cert.pem(), cert.pem(), key.serialize_pem());
    write_new(out, &bundle, 0o600)?;
    Ok(Issued {
        host: host.to_string(),
        serial: hex::encode(serial),
        not_before: not_before - Duration::hours(1),
        not_after,
    })
}

/// The serial number of a certificate, lowercase hex without leading
/// zero bytes' loss (the DER integer's bytes as written).
pub fn serial_of(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(hex::encode(parsed.raw_serial()))
}

/// The host name an agent certificate was issued for (its common name).
pub fn host_of(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use backstop_common::private::{ScratchDir, mode_of};

    use super::*;

    #[test]
    fn init_then_enroll() {
        let dir = ScratchDir::new("pki");
        let made = init(&dir, "web-1", &[]).unwrap();
        let perms = |p: &Path| mode_of(p).unwrap();
        assert_eq!(perms(&Pki::new(&dir).ca_key()), 0o600);
        assert_eq!(perms(&Pki::new(&dir).server_key()), 0o600);
        assert_eq!(perms(&made.agent_bundle), 0o600);
        let b = backstop_common::quic::read_bundle(&made.agent_bundle).unwrap();
        assert_eq!(host_of(&b.cert).as_deref(), Some("web-1"));
        assert_eq!(serial_of(&b.cert), Some(made.agent_cert.serial.clone()));
        assert_eq!(made.agent_cert.serial.len(), 32, "128-bit serial");
        assert_eq!(perms(&dir.join("pki")), 0o700);
        assert_eq!(perms(&dir.join("pki/agents")), 0o700);
        assert!(matches!(
            init(&dir, "web-1", &[]),
            Err(PkiError::Exists { .. })
        ));
        let out = dir.join("web-2.bundle");
        let second = enroll(&dir, "web-2", &out, 30).unwrap();
        assert_ne!(second.serial, made.agent_cert.serial);
        assert_eq!(
            host_of(&backstop_common::quic::read_bundle(&out).unwrap().cert).as_deref(),
            Some("web-2")
        );
        assert!(matches!(
            enroll(&dir, "bad host!", &dir.join("x"), 30),
            Err(PkiError::BadHost(_))
        ));
        assert!(
            enroll(&dir, "web-2", &out, 30).is_err(),
            "an existing bundle is never overwritten"
        );
    }
}
