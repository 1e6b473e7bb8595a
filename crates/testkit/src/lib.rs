//! Harnesses the workspace's end-to-end tests share: real programs, started, probed and
//! stopped the way a test needs them. A dev-dependency only; nothing here ships.

pub mod rsyslog;

/// Whether a test that needs root and what `missing` names (what this machine lacks) can
/// run. When something is missing it says SKIPPED and returns false, except under
/// `CI=true`, where nothing may skip and it fails instead.
pub fn can_run(mut missing: Vec<String>) -> bool {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.insert(0, "root".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!in_ci, "CI=true but this test needs {missing:?}");
    eprintln!("SKIPPED (not counted as a pass): needs {missing:?}");
    false
}
