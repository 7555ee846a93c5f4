"""Prefect tasks, one module per pipeline stage; `tasks.core.dag` wires them in order."""
