"""Document shards (parquet) and token shards (flat binaries read by memmap)."""
