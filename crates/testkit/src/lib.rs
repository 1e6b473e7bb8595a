//! Harnesses the workspace's end-to-end tests share: real programs, started, probed and
//! stopped the way a test needs them. A dev-dependency only; nothing here ships.

pub mod rsyslog;
