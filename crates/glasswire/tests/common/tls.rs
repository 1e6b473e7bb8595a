//! TLS pieces of the end-to-end tests: an inspection CA, a testbed CA with a server
//! certificate, nginx serving over TLS in the server namespace.

use super::*;
use std::path::Path;
use std::time::Duration;

/// An inspection CA (made by `glasswire ca init`), a testbed CA and a certificate for
/// www.test it issued, in `dir`.
pub fn intercept_pki(dir: &Path) {
    run_ok(&[
        BIN,
        "ca",
        "init",
        "--out",
        dir.join("ica").to_str().expect("path"),
    ]);
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    run_ok(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=testbed CA",
        "-keyout",
        &p("tca.key"),
        "-out",
        &p("tca.pem"),
    ]);
    run_ok(&[
        "openssl",
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=www.test",
        "-keyout",
        &p("www.key"),
        "-out",
        &p("www.csr"),
    ]);
    std::fs::write(
        dir.join("www.ext"),
        "subjectAltName=DNS:www.test\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run_ok(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &p("www.csr"),
        "-CA",
        &p("tca.pem"),
        "-CAkey",
        &p("tca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("www.ext"),
        "-out",
        &p("www.pem"),
    ]);
}

/// nginx with HTTP/1.1 and HTTP/2 over TLS on 443 for www.test, serving `dir/www`.
pub fn start_www_nginx(tb: &Testbed, dir: &Path) -> KillOnDrop {
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
         fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  \
         server {{\n    listen 443 ssl http2;\n    ssl_certificate {d}/www.pem;\n    ssl_certificate_key {d}/www.key;\n    root {d}/www;\n  }}\n}}\n"
    );
    std::fs::create_dir_all(dir.join("tmp")).expect("tmp");
    std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
    let conf_path = format!("{d}/nginx.conf");
    let child = tb.spawn_in(
        &tb.s("server_ns"),
        &[
            "nginx",
            "-p",
            &d.to_string(),
            "-c",
            &conf_path,
            "-g",
            "daemon off;",
        ],
    );
    let guard = KillOnDrop(child);
    for _ in 0..100 {
        let out = tb.server(&["ss", "-ltnH", "sport = :443"]);
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return guard;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
