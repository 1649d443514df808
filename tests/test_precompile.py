"""Background compilation of batch buckets (service/precompile.py)."""

from __future__ import annotations

import numpy as np
from banditd import policies
from banditd.policies import TRACES
from banditd.service.config import ServerConfig
from banditd.service.precompile import Precompiler, buckets


def _config(family: str, **over):
    c = {
        "family": family,
        "hyperparameters": policies.resolve(family, over.pop("hyper", {})),
        "policy_dim": 3,
        "arm_feature_dim": 0,
        "slate_size": 1,
    }
    c.update(over)
    return c


def test_buckets_are_the_powers_of_two_above_one():
    assert buckets(64) == [2, 4, 8, 16, 32, 64]
    assert buckets(100) == [2, 4, 8, 16, 32, 64]
    assert buckets(1) == []


def test_learner_sized_updates_do_not_compile_after_precompile():
    # d=7 and 5 arms: a shape no other test compiles, so the trace counts below are this test's
    cfg = _config("linucb", policy_dim=7, hyper={"lam": 0.37, "alpha": 0.5})
    pol = policies.make("linucb", **cfg["hyperparameters"])
    pre = Precompiler(select_rows=8, update_rows=32)
    try:
        pre.submit(cfg, pol, 5)
        pre.submit(cfg, pol, 5)  # the same shape twice is one job
        pre.join()
    finally:
        pre.stop()
    before = TRACES[("linucb", "update")] + TRACES[("linucb", "select_packed")]
    st = pol.init(5, dim=7)
    for rows in (3, 7, 17, 32):
        st = pol.update(st, np.ones((rows, 7)), np.zeros(rows, np.int64), np.ones(rows))
    pol.select(st, np.ones((6, 7)), np.zeros((6, 2), np.uint32))
    after = TRACES[("linucb", "update")] + TRACES[("linucb", "select_packed")]
    assert after == before, "a precompiled bucket was traced again"
    # a bucket beyond the limit still compiles on demand (and the counter sees it)
    n = TRACES[("linucb", "update")]
    pol.update(st, np.ones((40, 7)), np.zeros(40, np.int64), np.ones(40))
    assert TRACES[("linucb", "update")] == n + 1


def test_ranked_shapes_precompile_too():
    cfg = _config("cascade_ucb1", policy_dim=0, slate_size=3, hyper={"c_explore": 1.25})
    pol = policies.make("cascade_ucb1", c_explore=1.25)
    pre = Precompiler(select_rows=4, update_rows=4)
    try:
        pre.submit(cfg, pol, 6)
        pre.join()
    finally:
        pre.stop()
    n = TRACES[("cascade_ucb1", "rank_select:3")]
    st = pol.init(6)
    pol.select(st, None, np.zeros((3, 2), np.uint32), k=3)  # bucket 4
    assert TRACES[("cascade_ucb1", "rank_select:3")] == n


def test_precompile_setting_parses_from_the_environment():
    assert ServerConfig.from_env({"BANDITD_PRECOMPILE": "0"}).precompile is False
    assert ServerConfig.from_env({"BANDITD_PRECOMPILE": "true"}).precompile is True
    assert ServerConfig.from_env({}).precompile is True
    try:
        ServerConfig.from_env({"BANDITD_PRECOMPILE": "maybe"})
    except ValueError as e:
        assert "BANDITD_PRECOMPILE" in str(e)
    else:
        raise AssertionError("a bad boolean must be rejected")
