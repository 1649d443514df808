"""fixed_split (the A/B control) against a numpy reference: propensity = weight, renormalized
over the eligible active arms, epsilon-mixed; rewards never move it."""

from __future__ import annotations

import numpy as np
import pytest
from banditd.policies import derive_keys, make

TOL = 1e-9


def keys(n: int, scope: str = "split") -> np.ndarray:
    return derive_keys(scope, [str(i) for i in range(n)])


def reference(weights: list[float] | None, n_arms: int, elig: np.ndarray, eps: float) -> np.ndarray:
    """Choice probabilities computed directly from the documented rule, per row of ``elig``."""
    w = np.ones(n_arms) if weights is None else np.zeros(n_arms)
    if weights is not None:
        w[: min(len(weights), n_arms)] = weights[:n_arms]
    out = np.zeros(elig.shape)
    for i, row in enumerate(elig):
        wm = np.where(row, w, 0.0)
        base = wm / wm.sum() if wm.sum() > 0 else row / row.sum()
        out[i] = np.where(row, (1 - eps) * base + eps / row.sum(), 0.0)
    return out


@pytest.mark.parametrize(
    ("weights", "eps"),
    [([0.5, 0.3, 0.2], 0.0), ([2.0, 1.0, 1.0], 0.1), (None, 0.0), ([1.0, 0.0], 0.0)],
)
def test_propensities_match_the_reference(weights: list[float] | None, eps: float) -> None:
    pol = make("fixed_split", weights=weights)
    st = pol.init(3)
    elig = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 1], [0, 0, 1]], bool)
    if weights == [1.0, 0.0]:
        elig = np.array([[1, 1, 1], [0, 1, 1]], bool)  # arm 2 is beyond the list: weight 0
    out = pol.select(st, None, keys(len(elig)), elig, epsilon=eps)
    ref = reference(weights, 3, elig, eps)
    np.testing.assert_allclose(out.probs[:, :3], ref, rtol=TOL, atol=TOL)
    rows = np.arange(len(elig))
    np.testing.assert_allclose(out.propensity, ref[rows, out.arms], rtol=TOL, atol=TOL)
    assert elig[rows, out.arms].all()


def test_propensity_is_the_weight_and_frequencies_follow_it() -> None:
    weights = [0.5, 0.3, 0.2]
    pol = make("fixed_split", weights=weights)
    st = pol.init(3)
    n = 20_000
    out = pol.select(st, None, keys(n, "freq"))
    np.testing.assert_allclose(out.propensity, np.asarray(weights)[out.arms], rtol=TOL)
    freq = np.bincount(out.arms, minlength=3) / n
    # 5 standard errors of a binomial proportion: a wrong split (e.g. even) fails by far.
    se = np.sqrt(np.asarray(weights) * (1 - np.asarray(weights)) / n)
    assert np.all(np.abs(freq - weights) < 5 * se), freq


def test_rewards_are_counted_but_never_move_the_split() -> None:
    pol = make("fixed_split", weights=[0.25, 0.75])
    st0 = pol.init(2)
    arms = np.array([0, 0, 0, 1])
    rewards = np.array([1.0, 1.0, 1.0, 0.0])
    st = pol.update(st0, None, arms, rewards)
    np.testing.assert_allclose(np.asarray(st.stats["n"])[:2], [3, 1])
    np.testing.assert_allclose(np.asarray(st.stats["s"])[:2], [3, 0])
    k = keys(64)
    before, after = pol.select(st0, None, k), pol.select(st, None, k)
    np.testing.assert_array_equal(before.arms, after.arms)
    np.testing.assert_allclose(after.probs[:, :2], [[0.25, 0.75]] * 64, rtol=TOL)


@pytest.mark.parametrize("bad", [[], [-1.0, 2.0], [0.0, 0.0], "0.5,0.5", [float("nan"), 1.0]])
def test_bad_weights_name_the_hyperparameter(bad: object) -> None:
    with pytest.raises(ValueError, match="weights"):
        make("fixed_split", weights=bad)
