//! TLS pieces of the end-to-end tests: an inspection CA, a testbed CA with a server
//! certificate, nginx serving over TLS in the server namespace.

use super::*;
use std::path::{Path, PathBuf};

/// A CA (`{stem}-ca.pem`, its key `{stem}-ca.key`) and a server certificate it issued
/// (`{stem}.pem`, `{stem}.key`) for `cn` with the subjectAltNames `sans`
/// (`DNS:name`, `IP:addr`), made with openssl in `dir`. Returns (CA, cert, key).
pub fn openssl_ca_and_server(
    dir: &Path,
    stem: &str,
    ca_cn: &str,
    cn: &str,
    sans: &str,
) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: String| dir.join(f).to_string_lossy().into_owned();
    let (ca, ca_key) = (p(format!("{stem}-ca.pem")), p(format!("{stem}-ca.key")));
    let (cert, key, csr, ext) = (
        p(format!("{stem}.pem")),
        p(format!("{stem}.key")),
        p(format!("{stem}.csr")),
        p(format!("{stem}.ext")),
    );
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_subj = format!("/CN={ca_cn}");
    let mut argv = vec!["openssl", "req", "-x509"];
    argv.extend(new_key);
    argv.extend(["-days", "2", "-subj", &ca_subj, "-keyout", &ca_key, "-out", &ca]);
    run_ok(&argv);
    let subj = format!("/CN={cn}");
    let mut argv = vec!["openssl", "req"];
    argv.extend(new_key);
    argv.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
    run_ok(&argv);
    std::fs::write(
        &ext,
        format!("subjectAltName={sans}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("ext");
    run_ok(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca.into(), cert.into(), key.into())
}

/// An inspection CA (made by `glasswire ca init`) in `dir/ica`, and a testbed CA
/// (`dir/www-ca.pem`) that issued a certificate for www.test (`dir/www.pem`,
/// `dir/www.key`).
pub fn intercept_pki(dir: &Path) {
    run_ok(&[
        BIN,
        "ca",
        "init",
        "--out",
        dir.join("ica").to_str().expect("path"),
    ]);
    openssl_ca_and_server(dir, "www", "testbed CA", "www.test", "DNS:www.test");
}

/// nginx with HTTP/1.1 and HTTP/2 over TLS on 443 for www.test, serving `dir/www`.
pub fn start_www_nginx(tb: &Testbed, dir: &Path) -> KillOnDrop {
    let d = dir.display();
    let server = format!(
        "    listen 443 ssl http2;\n    ssl_certificate {d}/www.pem;\n    ssl_certificate_key {d}/www.key;\n"
    );
    KillOnDrop(super::spawn_nginx(tb, dir, &server, 443))
}

pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
