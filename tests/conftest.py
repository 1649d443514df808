"""Test-wide setup: one BLAS thread (two are ~20x slower here) and a persistent JAX cache."""

import os
import pathlib

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Servers started by tests compile on demand: background compiles of every experiment shape
# would compete with the tests for two cores (test_precompile turns it back on).
os.environ.setdefault("BANDITD_PRECOMPILE", "0")

import jax  # noqa: E402

_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
jax.config.update("jax_enable_x64", True)

import banditd.service.server as _server  # noqa: E402

_server.PRECOMPILE = False
