"""Reading crawls and datasets: WARC/WET/parquet/JSONL/HF readers, the polite crawler, quarantine."""
