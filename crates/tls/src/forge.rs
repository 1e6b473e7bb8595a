//! Forged leaf certificates: the upstream server's names, signed by the inspection CA.
//!
//! Only names are copied (subject CN, DNS and IP subjectAltNames): everything a client
//! checks against the URL it asked for. Key, serial, issuer and extensions are ours. One
//! leaf key per [`Forger`] is reused for every leaf, as mitmproxy and sslsplit do: a mint
//! then costs one signature, not a key generation, and the key never leaves this process.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::ca::InspectionCa;
use crate::Error;

/// Default number of forged leaves kept.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// Which issuer signed a forged leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Trust {
    /// The inspection CA: clients that trust it accept the leaf.
    Inspection,
    /// An issuer made up at start and trusted by nobody: the client's own check fails,
    /// as it would have against the real (invalid) upstream certificate.
    Untrusted,
}

/// Forged leaves by (sha256 of the upstream leaf DER, issuer).
type ForgeCache = LruCache<([u8; 32], Trust), Arc<CertifiedKey>>;

/// Cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForgeStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

/// Names copied from an upstream leaf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamNames {
    pub common_name: Option<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

/// Mints and caches forged leaves. Shared by the sessions of a worker (`Arc<Forger>`).
pub struct Forger {
    ca: InspectionCa,
    untrusted_issuer: Issuer<'static, KeyPair>,
    untrusted_cert: CertificateDer<'static>,
    leaf_key: KeyPair,
    leaf_signer: Arc<dyn SigningKey>,
    cache: Mutex<ForgeCache>,
    hits: AtomicU64,
    misses: AtomicU64,
}

// Manual: the CA, the untrusted issuer and the leaf key are private keys.
impl fmt::Debug for Forger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forger")
            .field("ca", &self.ca)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Forger {
    /// A forger signing with `ca`, caching up to `capacity` leaves (at least 1).
    pub fn new(ca: InspectionCa, capacity: usize) -> Result<Self, Error> {
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let leaf_signer = signer_for(&leaf_key)?;

        // The untrusted issuer lives as long as the inspection CA so that the only
        // thing wrong with its leaves is who signed them.
        let untrusted_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "glasswire untrusted issuer");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = ca.not_before;
        params.not_after = ca.not_after;
        params.serial_number = Some(crate::random_serial()?);
        let untrusted_cert = params.self_signed(&untrusted_key)?.der().clone();
        let untrusted_issuer = Issuer::new(params, untrusted_key);

        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            ca,
            untrusted_issuer,
            untrusted_cert,
            leaf_key,
            leaf_signer,
            cache: Mutex::new(LruCache::new(capacity)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The inspection CA certificate.
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        self.ca.cert_der()
    }

    /// A leaf with `upstream_leaf`'s names signed by the inspection CA; chain is leaf + CA.
    pub fn forge(&self, upstream_leaf: &[u8]) -> Result<Arc<CertifiedKey>, Error> {
        self.cached(upstream_leaf, Trust::Inspection)
    }

    /// The same names signed by an issuer nobody trusts: for an upstream that failed
    /// verification when policy lets the client's own check fail instead of blocking.
    pub fn forge_untrusted(&self, upstream_leaf: &[u8]) -> Result<Arc<CertifiedKey>, Error> {
        self.cached(upstream_leaf, Trust::Untrusted)
    }

    /// Cache counters since creation.
    pub fn stats(&self) -> ForgeStats {
        ForgeStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ForgeCache> {
        // A panic elsewhere while holding the lock leaves a cache that is still coherent
        // (entries are inserted whole), so poisoning is not a reason to stop forging.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, upstream_leaf: &[u8], trust: Trust) -> Result<Arc<CertifiedKey>, Error> {
        let key: [u8; 32] = Sha256::digest(upstream_leaf).into();
        if let Some(hit) = self.lock().get(&(key, trust)) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Minted outside the lock: two sessions racing on one new site both mint, which
        // is cheaper than serialising every session of the worker behind one signature.
        let minted = Arc::new(self.mint(upstream_leaf, trust)?);
        self.lock().put((key, trust), minted.clone());
        Ok(minted)
    }

    fn mint(&self, upstream_leaf: &[u8], trust: Trust) -> Result<CertifiedKey, Error> {
        let names = parse_names(upstream_leaf)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = &names.common_name {
            dn.push(DnType::CommonName, cn.as_str());
        }
        params.distinguished_name = dn;
        for name in &names.dns {
            // Names that are not IA5 cannot be expressed; the client would not match them.
            if let Ok(ia5) = rcgen::string::Ia5String::try_from(name.as_str()) {
                params.subject_alt_names.push(SanType::DnsName(ia5));
            }
        }
        for ip in &names.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        if params.subject_alt_names.is_empty() {
            // Clients ignore the CN when matching (RFC 6125 §6.4.4 as browsers apply it):
            // an upstream leaf with a CN only gets it as a SAN so the forgery names the
            // same host.
            if let Some(cn) = names.common_name.as_deref() {
                if let Ok(ip) = cn.parse::<IpAddr>() {
                    params.subject_alt_names.push(SanType::IpAddress(ip));
                } else if let Ok(ia5) = rcgen::string::Ia5String::try_from(cn) {
                    params.subject_alt_names.push(SanType::DnsName(ia5));
                }
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(crate::random_serial()?);

        let up_nb = names
            .not_before
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
        let up_na = names
            .not_after
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
        let (issuer, issuer_cert) = match trust {
            Trust::Inspection => {
                // Clipped to the CA's window: a leaf outlasting its issuer is rejected by
                // some clients, and a leaf valid where the upstream is not would vouch for
                // more than the upstream did.
                let nb = up_nb.map_or(self.ca.not_before, |t| t.max(self.ca.not_before));
                let na = up_na.map_or(self.ca.not_after, |t| t.min(self.ca.not_after));
                if nb >= na {
                    return Err(Error::ValidityOutsideCa);
                }
                params.not_before = nb;
                params.not_after = na;
                (&self.ca.issuer, &self.ca.cert)
            }
            Trust::Untrusted => {
                // The upstream's own window, expired or not: whatever the client's check
                // says, it should say about the real certificate too.
                params.not_before = up_nb.unwrap_or(self.ca.not_before);
                params.not_after = up_na.unwrap_or(self.ca.not_after);
                (&self.untrusted_issuer, &self.untrusted_cert)
            }
        };
        let leaf = params.signed_by(&self.leaf_key, issuer)?;
        Ok(CertifiedKey::new(
            vec![leaf.der().clone(), issuer_cert.clone()],
            self.leaf_signer.clone(),
        ))
    }
}

fn signer_for(key: &KeyPair) -> Result<Arc<dyn SigningKey>, Error> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok(crate::provider().key_provider.load_private_key(der)?)
}

/// The names and validity of an upstream leaf (DER).
pub fn parse_names(der: &[u8]) -> Result<UpstreamNames, Error> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::UpstreamCert(e.to_string()))?;
    let mut names = UpstreamNames {
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        not_before: Some(cert.validity().not_before.timestamp()),
        not_after: Some(cert.validity().not_after.timestamp()),
        ..Default::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            match gn {
                GeneralName::DNSName(d) => names.dns.push((*d).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        let mut a = [0u8; 4];
                        a.copy_from_slice(b);
                        names.ips.push(IpAddr::from(a));
                    }
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        names.ips.push(IpAddr::from(a));
                    }
                    // A malformed address names nothing a client could have asked for.
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(names)
}
