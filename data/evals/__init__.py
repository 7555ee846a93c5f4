"""Evaluation items built from data: the crawl probe for base models."""
