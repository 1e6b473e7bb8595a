//! Mirror (issue 7). Work in progress.
