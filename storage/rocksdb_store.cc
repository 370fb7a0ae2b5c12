// Placeholder translation unit until the RocksDB store lands (same session).
