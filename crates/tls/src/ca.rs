//! The inspection CA: created once by the operator, loaded at start.
//!
//! The key file is the most sensitive thing the bridge holds: whoever has it can
//! impersonate any site to every client that trusts the CA. So it is created 0600 from the
//! first byte (never chmod after writing, which leaves a window), and loading refuses a
//! key that group or others can reach.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::Error;

/// Common name of a CA made by [`init`].
pub const DEFAULT_CA_NAME: &str = "glasswire inspection CA";
/// File names [`init`] writes inside its directory.
pub const CERT_FILE: &str = "ca.crt";
pub const KEY_FILE: &str = "ca.key";

/// Where [`init`] put the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Parameters of [`init_with`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub common_name: String,
    /// How long the CA is valid from `now` on.
    pub validity: Duration,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            common_name: DEFAULT_CA_NAME.to_owned(),
            // Ten years: long enough that clients are not re-provisioned often, short
            // enough to be accepted by tooling that balks at "forever" roots.
            validity: Duration::from_secs(3650 * 24 * 3600),
        }
    }
}

/// Creates `dir/ca.crt` (0644) and `dir/ca.key` (0600) with [`InitOptions::default`].
pub fn init(dir: &Path) -> Result<CaFiles, Error> {
    init_with(dir, &InitOptions::default(), SystemTime::now())
}

/// Creates an inspection CA valid from `now` (minus a day of clock-skew slack) and writes
/// it into `dir`. Refuses to overwrite either file.
pub fn init_with(dir: &Path, opts: &InitOptions, now: SystemTime) -> Result<CaFiles, Error> {
    let files = CaFiles {
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
    };
    for path in [&files.cert, &files.key] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(Error::AlreadyExists { path: path.clone() });
        }
    }
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        action: "cannot create directory",
        source,
    })?;

    let ca = InspectionCa::generate(&opts.common_name, now, opts.validity)?;
    let key_pem = ca.issuer.key().serialize_pem();

    // Key first: if it cannot be created exclusively, nothing has been written yet.
    write_new(&files.key, key_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&files.cert, pem_cert(&ca.cert).as_bytes(), 0o644) {
        // Do not leave an orphan key behind for a CA whose certificate we never wrote.
        let _ = fs::remove_file(&files.key);
        return Err(e);
    }
    Ok(files)
}

fn pem_cert(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref().to_vec()))
}

/// Creates `path` exclusively with `mode` already applied at open(2), then writes `data`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                Error::Io {
                    path: path.to_owned(),
                    action: "cannot create",
                    source,
                }
            }
        })?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            action: "cannot write",
            source,
        })
}

/// The inspection CA in memory: its certificate and the issuer that signs forged leaves.
pub struct InspectionCa {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) issuer: Issuer<'static, KeyPair>,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    name: String,
}

// Manual: the issuer holds the private key, which must never reach a log.
impl fmt::Debug for InspectionCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InspectionCa")
            .field("name", &self.name)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl InspectionCa {
    /// A fresh CA in memory (ECDSA P-256, CA:true with pathlen 0, keyCertSign + cRLSign).
    pub fn generate(common_name: &str, now: SystemTime, validity: Duration) -> Result<Self, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "glasswire");
        params.distinguished_name = dn;
        // pathlen 0: the CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::from(now);
        // A day of slack so a client whose clock is slightly behind accepts it at once.
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + validity;
        params.serial_number = Some(crate::random_serial()?);
        let cert = params.self_signed(&key)?;
        let not_before = params.not_before;
        let not_after = params.not_after;
        Ok(Self {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            not_before,
            not_after,
            name: common_name.to_owned(),
        })
    }

    /// Loads the CA written by [`init`] (or any ECDSA/RSA CA in PEM). Refuses a key file
    /// that group or others can access, a certificate that is not a CA, and a key that is
    /// not the certificate's.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, Error> {
        let meta = fs::metadata(key_path).map_err(|source| Error::Io {
            path: key_path.to_owned(),
            action: "cannot stat",
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::KeyPermissions {
                path: key_path.to_owned(),
                mode,
            });
        }
        let cert_pem = fs::read(cert_path).map_err(|source| Error::Io {
            path: cert_path.to_owned(),
            action: "cannot read",
            source,
        })?;
        let key_pem = fs::read(key_path).map_err(|source| Error::Io {
            path: key_path.to_owned(),
            action: "cannot read",
            source,
        })?;
        let cert = CertificateDer::from_pem_slice(&cert_pem).map_err(|_| Error::BadFile {
            path: cert_path.to_owned(),
            what: "no PEM CERTIFICATE block".into(),
        })?;
        // The parse error may quote input; say only that it failed.
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| Error::BadFile {
            path: key_path.to_owned(),
            what: "no PEM private key block".into(),
        })?;
        Self::from_der(cert, &key).map_err(|e| match e {
            LoadError::Mismatch => Error::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            },
            LoadError::BadCert(what) => Error::BadFile {
                path: cert_path.to_owned(),
                what,
            },
            LoadError::BadKey => Error::BadFile {
                path: key_path.to_owned(),
                what: "private key cannot be used (unsupported algorithm or corrupt)".into(),
            },
        })
    }

    fn from_der(cert: CertificateDer<'static>, key: &PrivateKeyDer<'_>) -> Result<Self, LoadError> {
        let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|_| LoadError::BadCert("certificate cannot be parsed".into()))?;
        if !x509.is_ca() {
            return Err(LoadError::BadCert(
                "certificate is not a CA (basicConstraints cA is not set)".into(),
            ));
        }
        let name = x509
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_owned();
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();

        // rustls compares the key's SubjectPublicKeyInfo with the certificate's.
        let provider = crate::provider();
        rustls::sign::CertifiedKey::from_der(vec![cert.clone()], key.clone_key(), &provider).map_err(
            |e| match e {
                rustls::Error::InconsistentKeys(_) => LoadError::Mismatch,
                _ => LoadError::BadKey,
            },
        )?;
        let key_pair = KeyPair::try_from(key).map_err(|_| LoadError::BadKey)?;
        let issuer = Issuer::from_ca_cert_der(&cert, key_pair)
            .map_err(|e| LoadError::BadCert(format!("certificate cannot be used as issuer: {e}")))?;
        Ok(Self {
            cert,
            issuer,
            not_before,
            not_after,
            name,
        })
    }

    /// The CA certificate (what clients must trust).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> String {
        pem_cert(&self.cert)
    }

    /// Subject common name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Validity window as Unix seconds (not_before, not_after).
    pub fn validity(&self) -> (i64, i64) {
        (self.not_before.unix_timestamp(), self.not_after.unix_timestamp())
    }
}

enum LoadError {
    Mismatch,
    BadCert(String),
    BadKey,
}
