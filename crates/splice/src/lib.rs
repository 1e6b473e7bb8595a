//! TCP takeover (issue 6). Work in progress.
