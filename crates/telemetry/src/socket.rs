//! The stats socket: a Unix stream socket; each connection gets one JSON document and
//! is closed. Owner read/write and group read/write only (0660): never world-writable.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

type Snapshot = dyn Fn() -> serde_json::Value + Send + Sync;

/// Serves snapshots until dropped; dropping removes the socket file.
#[derive(Debug)]
pub struct StatsServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatsServer {
    /// Binds `path`, replacing a stale socket left by a process that died, but refusing
    /// to take over one that another live process still answers on.
    pub fn bind(path: &Path, snapshot: Arc<Snapshot>) -> Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the stats socket directory {}", dir.display()))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
            }
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "stats socket {} is in use by a running process (is another glasswire running with this config?)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale stats socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding the stats socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let thread = std::thread::Builder::new()
            .name("stats".into())
            .spawn(move || serve(listener, snapshot, stop_thread))?;
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn serve(listener: UnixListener, snapshot: Arc<Snapshot>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let mut body = snapshot().to_string();
                body.push('\n');
                // A reader that goes away early is its own problem, not ours.
                let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = conn.write_all(body.as_bytes());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!(error = %e, "stats socket accept failed");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

impl Drop for StatsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one snapshot from the stats socket at `path`.
pub fn fetch(path: &Path) -> Result<serde_json::Value> {
    let mut conn = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot connect to the stats socket {} (is glasswire running? is the path in its config the same?)",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut body = String::new();
    conn.read_to_string(&mut body)?;
    serde_json::from_str(&body).context("the stats socket sent something that is not JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_snapshots_with_safe_permissions_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("gw-stats-test-{}", std::process::id()));
        let path = dir.join("stats.sock");
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = calls.clone();
        let server = StatsServer::bind(
            &path,
            Arc::new(move || serde_json::json!({"n": c.fetch_add(1, Ordering::Relaxed)})),
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o002, 0, "stats socket must not be world-writable");
        assert_eq!(fetch(&path).unwrap()["n"], 0);
        assert_eq!(fetch(&path).unwrap()["n"], 1);
        // A second server on a live socket is refused.
        assert!(StatsServer::bind(&path, Arc::new(|| serde_json::json!({}))).is_err());
        drop(server);
        assert!(!path.exists());
        assert!(fetch(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
