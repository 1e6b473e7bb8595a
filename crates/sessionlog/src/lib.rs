//! Session records and their sinks (issue 8). Under construction.
pub fn x() {}
