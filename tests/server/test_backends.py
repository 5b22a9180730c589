"""engine/backends.py on this machine's build, where the CPU backend is linked in.
A split build (GGML_BACKEND_DL, the CPU image's) is exercised by the e2e tier's server pods."""

from __future__ import annotations

from localmodel_server.engine import backends


def test_a_build_with_backends_linked_in_keeps_its_devices_and_loads_nothing() -> None:
    before = backends._ggml().ggml_backend_dev_count()
    assert before >= 1
    assert backends.load_dynamic_backends() == before


def test_split_builds_are_looked_for_beside_libllama_and_in_the_prefix_bin() -> None:
    lib, bin_dir = backends.backend_dirs()
    assert lib.name == "lib" and lib.parent.name == "llama_cpp"
    assert bin_dir == lib.parents[1] / "bin"
