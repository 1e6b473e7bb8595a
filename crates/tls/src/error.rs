use std::path::PathBuf;

/// Errors of this crate. No variant ever carries key material: messages name files,
/// modes and reasons only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: already exists; refusing to overwrite an inspection CA (remove it first or pick another directory)")]
    AlreadyExists { path: PathBuf },
    #[error(
        "{path}: private key is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{key}: private key does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: {what}")]
    BadFile { path: PathBuf, what: String },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("upstream certificate cannot be parsed: {0}")]
    UpstreamCert(String),
    #[error("upstream certificate validity lies outside the inspection CA's")]
    ValidityOutsideCa,
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no trust roots: the system store is empty and no upstream CA file was given")]
    NoRoots,
    #[error("the system random number generator failed")]
    Random,
}
