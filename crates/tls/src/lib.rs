//! TLS halves (issue 6). Work in progress.
