"""Cleaning crawled documents: extraction, filter families, PII, poison scan, dedup, the step pipeline."""
