//! Userspace UDP fault proxy (filled in by the proxy work).
