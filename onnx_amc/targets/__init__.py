"""Where latency comes from: live measurement on this host, on a remote device over SSH, or a
prediction from a measured per-op profile (bundled by name or from a file)."""
