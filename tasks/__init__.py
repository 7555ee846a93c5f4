"""Prefect tasks, one module per pipeline stage; `tasks.dag` wires them in order."""
