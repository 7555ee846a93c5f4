"""Conversations and comparisons: label formats, validation, the chat tasks."""
