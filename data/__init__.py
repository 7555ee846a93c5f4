"""Data code for LLM Factory: crawl readers, extraction, filters, dedup, document and token shards, labels."""
