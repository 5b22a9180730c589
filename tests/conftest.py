"""Shared pytest configuration: fixture plugins live in tests/support/."""

# Importable as `support.*` because pyproject sets pytest `pythonpath = ["tests"]`.
pytest_plugins: list[str] = [
    "support.llama_models",
    "support.model_server",
    "support.netns",
    "support.controlplane",
    "support.http_faults",
    "support.fake_hub",
    "support.fake_registry",
    "support.s3_moto",
    "support.status_capture",
    "support.router_procs",
]
