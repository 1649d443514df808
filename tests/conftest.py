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


import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program at the end of each test module. One pytest process compiles
    thousands of them (every family at many shapes); keeping them all made XLA's CPU compiler
    segfault in a late module on a cold cache (CI, 2026-12-06: test_sim.py, ~670 tests in).
    Later modules reload what they need from the persistent cache."""
    yield
    jax.clear_caches()
    gc.collect()
