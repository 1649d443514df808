"""Small selects skip XLA (numpy on the host); they must decide exactly as the jitted kernel.

A single LinUCB context and small Thompson batches are dispatch-bound in XLA, so the builder
answers them with numpy. These tests hold the two paths to the same rule: identical arms and
probabilities for deterministic families, the same distribution for sampled ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from banditd.policies import derive_keys, make
from banditd.policies.builder import HOST_ROWS


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_single_linucb_select_equals_the_kernel(dtype: str) -> None:
    rng = np.random.default_rng(0)
    pol = make("linucb", serving_dtype=dtype, alpha=0.7)
    st = pol.init(7, dim=5)
    st = pol.update(st, rng.normal(size=(300, 5)), rng.integers(0, 7, 300), rng.random(300))
    st = pol.retire_arms(st, [2])
    keys = derive_keys("host-vs-kernel", [str(i) for i in range(1500)])
    tol = 1e-12 if dtype == "float64" else 1e-5
    for i in range(1500):
        x = rng.normal(size=(1, 5))
        eps = (0.0, 0.1, 0.5)[i % 3]
        elig = None if i % 4 else np.r_[True, rng.random(7) < 0.6]
        one = pol.select(st, x, keys[i : i + 1], elig, epsilon=eps)  # host path
        two = pol.select(st, np.vstack([x, x]), np.vstack([keys[i : i + 1]] * 2),
                         None if elig is None else np.vstack([elig, elig]), epsilon=eps)  # XLA
        assert one.arms[0] == two.arms[0]
        np.testing.assert_allclose(one.probs[0], two.probs[0], atol=tol)
        np.testing.assert_allclose(one.scores[0], two.scores[0], rtol=tol, atol=tol)
        assert one.propensity[0] == pytest.approx(one.probs[0, one.arms[0]])


def test_small_thompson_selects_have_the_kernels_distribution() -> None:
    pol = make("beta_ts")
    st = pol.update(pol.init(4), None, [0, 0, 1, 2, 2, 3], [1, 0, 1, 1, 1, 0.0])
    n = 20_000
    keys = derive_keys("host-ts", [str(i) for i in range(n)])
    host = np.concatenate([pol.select(st, None, keys[i : i + HOST_ROWS], epsilon=0.2).arms
                           for i in range(0, n, HOST_ROWS)])
    kernel = pol.select(st, None, keys, epsilon=0.2)  # one batch above HOST_ROWS: XLA
    probs = kernel.probs[0, :4]
    for counts in (np.bincount(host, minlength=4)[:4], np.bincount(kernel.arms, minlength=4)[:4]):
        sd = np.sqrt(probs * (1 - probs) / n + 0.25 / 32768)  # empirical + Monte Carlo SE
        assert np.all(np.abs(counts / n - probs) < 4 * sd)
