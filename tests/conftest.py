"""Shared pytest configuration: fixture plugins live in tests/support/."""

pytest_plugins: list[str] = []
