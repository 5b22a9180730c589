"""Loads llama.cpp's compute backends when they are built as separate libraries.

An image built with `GGML_BACKEND_DL=ON` (and `GGML_CPU_ALL_VARIANTS=ON`, as
llama.cpp's own images are) holds one CPU library per x86 level: AVX2, AVX-512,
AMX and so on, next to libllama. None is linked in; ggml scores each against the
CPU it runs on and loads the best, so one image runs at full speed on every
node. llama.cpp's programs do this in `common_init`; llama-cpp-python does not,
so without this call such a build finds no device and cannot load a model.
A build with backends linked in (the default) already has its devices, and this
does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import llama_cpp

log = logging.getLogger(__name__)


def _ggml() -> ctypes.CDLL:
    # libllama links libggml, so the loaded library exports its symbols too.
    lib = llama_cpp.llama_cpp._lib
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_count.argtypes = []
    lib.ggml_backend_load_all_from_path.restype = None
    lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    return lib


def library_dir() -> Path:
    """The folder of libllama: llama_cpp/lib in the installed package."""
    return Path(llama_cpp.llama_cpp._base_path)


def backend_dirs() -> list[Path]:
    """Where a split build's backend libraries are: beside libllama when built with
    GGML_BACKEND_DIR=llama_cpp/lib (as Dockerfile.server does), else where ggml installs
    them by default, the install prefix's bin/ (site-packages/bin in a wheel)."""
    lib = library_dir()
    return [lib, lib.parents[1] / "bin"]


def load_dynamic_backends() -> int:
    """Loads the best backend libraries next to libllama if none is linked in.

    Returns the number of devices llama.cpp then has.
    """
    ggml = _ggml()
    for folder in backend_dirs():
        if ggml.ggml_backend_dev_count() > 0:
            break
        if folder.is_dir():
            ggml.ggml_backend_load_all_from_path(str(folder).encode())
            if ggml.ggml_backend_dev_count() > 0:
                log.info("loaded llama.cpp backends from %s", folder)
    return int(ggml.ggml_backend_dev_count())
