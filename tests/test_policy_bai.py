"""Best-arm identification families (algorithms.md §7) against independent numpy references.

Every expected value is computed here in numpy from the spec's formulas (radii, schedules,
bracket draws), never read from the library; the simulated runs are replayed in numpy to find
when (and which) arm was identified and to check every decision the library made on the way.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from banditd import sim
from banditd.policies import derive_keys, make
from banditd.policies.elimination import bracket_hash, identified, se_bounds, sh_quota

TOL = 1e-9
M32 = 0xFFFFFFFF


def keys(n: int, scope: str = "bai") -> np.ndarray:
    return derive_keys(scope, [str(i) for i in range(n)])


def close(actual, expected, tol: float = TOL) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


def stats_of(st) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in st.stats.items()}


# --- numpy references --------------------------------------------------------------------------


def se_reference(n, s, elim, active, delta=0.05, c=4.0):
    """Per-arm SE (§7.1, unequal pulls): radii, means and the arms eliminated now."""
    n, s, elim = (np.asarray(v, float) for v in (n, s, elim))
    assert not np.asarray(active)[len(n) :].any()  # the slots past the given ones are empty
    active = np.asarray(active, bool)[: len(n)]
    big_n = active.sum()
    radius = np.full(n.shape, np.inf)
    mean = np.zeros(n.shape)
    for i in np.flatnonzero(n > 0):
        radius[i] = math.sqrt(math.log(c * big_n * n[i] ** 2 / delta) / n[i])
        mean[i] = s[i] / n[i]
    surv = active & (elim == 0)
    best_lcb = max(mean[j] - radius[j] for j in np.flatnonzero(surv))
    return mean, radius, surv & (mean + radius < best_lcb)


def sh_schedule(n_arms: int, budget: int) -> tuple[int, list[int], list[int]]:
    """(R, t_r per round, |S_r| per round and the final 1) of plain SH (§7.2)."""
    rounds = math.ceil(math.log2(n_arms))
    sizes, pulls = [n_arms], []
    for _ in range(rounds):
        pulls.append(budget // (sizes[-1] * rounds))
        sizes.append(math.ceil(sizes[-1] / 2))
    return rounds, pulls, sizes


def fmix32(h):
    h = np.asarray(h, np.uint64) & M32
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & M32
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & M32
    return h ^ (h >> np.uint64(16))


def hash_reference(seed: int, ell: int, slots) -> np.ndarray:
    """u(seed, l, slot) = f(f(f(seed + 0x9E3779B9) ^ l) ^ f(slot + 0x7F4A7C15)) on uint32."""
    k = fmix32(fmix32((seed + 0x9E3779B9) & M32) ^ np.uint64(ell))
    return fmix32(k ^ fmix32((np.asarray(slots, np.uint64) + 0x7F4A7C15) & M32))


def brackets_reference(n_arms: int, budget: int, seed: int = 0):
    """Bracketing SH (§7.3 [recon]): [(l, m_l, T_l, members, t_r per round)] of the brackets that
    can afford m_l ceil(log2 m_l) pulls; members = the m_l smallest hashes (ties by slot)."""
    big_l = math.ceil(math.log2(n_arms))
    t_l = budget // big_l
    out = []
    for ell in range(1, big_l + 1):
        m = min(n_arms, 2**ell)
        r_b = math.ceil(math.log2(m))
        if t_l < m * r_b:
            continue
        u = hash_reference(seed, ell, np.arange(n_arms))
        members = sorted(range(n_arms), key=lambda a: (int(u[a]), a))[:m]
        _, pulls, _ = sh_schedule(m, t_l)
        out.append((ell, m, t_l, sorted(members), pulls))
    return out


def halve(arms, n, s):
    """The ceil(|S|/2) best arms by mean n/s, ties to the lower slot; unplayed arms last."""
    mean = {a: (s[a] / n[a] if n[a] > 0 else -np.inf) for a in arms}
    return sorted(sorted(arms, key=lambda a: (-mean[a], a))[: math.ceil(len(arms) / 2)])


# --- Successive Elimination -----------------------------------------------------------------------


def _se_rows(counts, sums):
    arms = np.concatenate([np.full(k, a) for a, k in enumerate(counts)])
    rewards = np.concatenate(
        [[1.0] * sm + [0.0] * (k - sm) for k, sm in zip(counts, sums, strict=True)]
    )
    return arms, rewards


def test_se_radii_elimination_and_stickiness():
    delta, c = 0.1, 2.0
    pol = make("successive_elimination", delta=delta, c=c)
    st = pol.init(4)  # slot 3 stays unplayed: infinite radius, never eliminated
    active = np.asarray(st.meta.active)
    counts, sums = [100, 100, 30, 0], [90, 10, 15, 0]
    st = pol.update(st, None, *_se_rows(counts, sums))
    got = stats_of(st)
    mean, radius, out = se_reference(counts, sums, np.zeros(4), active, delta, c)
    # hand check of the reference on arm 0: sqrt(ln(2 * 4 * 100^2 / 0.1) / 100)
    close(radius[0], math.sqrt(math.log(800_000) / 100))
    m, r, lcb, ucb = (np.asarray(v) for v in se_bounds(pol.kernels.h, st.stats, st.meta.active))
    close(m[:3], mean[:3])
    close(r[:3], radius[:3])
    close(ucb[:3], (mean + radius)[:3])
    close(lcb[:3], (mean - radius)[:3])
    assert np.isposinf(r[3]) and np.isposinf(ucb[3])
    assert out.tolist() == [False, True, False, False]  # arm 1: 0.1 + r < 0.9 - r
    close(got["elim"], out.astype(float))
    close(got["n"], counts)
    close(got["s"], sums)

    sel = pol.select(st, None, keys(2))
    close(sel.probs, np.tile([1 / 3, 0, 1 / 3, 1 / 3], (2, 1)))  # uniform over the survivors
    close(sel.scores[0, [0, 2]], (mean + radius)[[0, 2]])
    assert np.isneginf(sel.scores[0, 1])

    # 1,000 more wins for arm 1 would revive it on the merged sums: it stays eliminated
    st2 = pol.update(st, None, np.ones(1000, int), np.ones(1000))
    counts2, sums2 = [100, 1100, 30, 0], [90, 1010, 15, 0]
    _, _, fresh = se_reference(counts2, sums2, np.zeros(4), active, delta, c)
    assert not fresh[1]  # recomputed from scratch, arm 1 would be back
    assert stats_of(st2)["elim"].tolist() == [0.0, 1.0, 0.0, 0.0]
    out2 = pol.select(st2, None, keys(64, "sticky"))
    assert np.all(out2.probs[:, 1] == 0.0) and not np.any(out2.arms == 1)
    slot, conf = identified("successive_elimination", pol.hyper, st2)
    assert slot == -1 and math.isnan(conf)

    # LCBs are maxed over the survivors only: arm 1's (eliminated) LCB now beats arm 2's UCB,
    # which must not eliminate arm 2
    st3 = pol.update(st2, None, np.full(2000, 2), np.r_[np.ones(1300), np.zeros(700)])
    counts3, sums3 = [100, 1100, 2030, 0], [90, 1010, 1315, 0]
    _, _, out3 = se_reference(counts3, sums3, [0, 1, 0, 0], active, delta, c)
    _, _, naive = se_reference(counts3, sums3, np.zeros(4), active, delta, c)
    assert not out3.any() and naive[2]
    assert stats_of(st3)["elim"].tolist() == [0.0, 1.0, 0.0, 0.0]


def test_se_identifies_with_confidence():
    pol = make("successive_elimination")  # delta 0.05, c 4
    st = pol.init(2)
    active = np.asarray(st.meta.active)
    counts, sums = [200, 200], [180, 40]
    st = pol.update(st, None, *_se_rows(counts, sums))
    _, _, out = se_reference(counts, sums, np.zeros(2), active)
    assert out.tolist() == [False, True]
    assert stats_of(st)["elim"][:2].tolist() == [0.0, 1.0]
    slot, conf = identified("successive_elimination", pol.hyper, st)
    assert slot == 0 and conf == pytest.approx(0.95, abs=TOL)
    # before the data separates them nothing is identified
    early = pol.update(pol.init(2), None, *_se_rows([30, 30], [30, 0]))
    assert stats_of(early)["elim"][:2].tolist() == [0.0, 0.0]
    assert identified("successive_elimination", pol.hyper, early)[0] == -1


def test_se_least_pulled_allocation_and_fallback():
    pol = make("successive_elimination", allocation="least_pulled")
    st = pol.update(pol.init(4), None, *_se_rows([100, 100, 30, 5], [90, 10, 15, 3]))
    assert stats_of(st)["elim"][:4].tolist() == [0.0, 1.0, 0.0, 0.0]
    elig = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]], bool)
    out = pol.select(st, None, keys(4, "lp"), elig)
    cap = out.probs.shape[1]
    ref = np.zeros((4, cap))
    ref[0, 3] = 1.0  # least pulled survivor
    ref[1, 2] = 1.0  # the least pulled among the eligible survivors
    ref[2, 1] = 1.0  # no eligible survivor: uniform over the eligible (the eliminated arm)
    ref[3, 0] = 1.0
    close(out.probs, ref)
    # with equal counts the least-pulled rule is uniform over the survivors (round robin)
    st_eq = pol.update(pol.init(3), None, *_se_rows([4, 4, 4], [1, 2, 3]))
    close(pol.select(st_eq, None, keys(1)).probs[0, :3], [1 / 3] * 3)


# --- Sequential Halving: schedule ---------------------------------------------------------------


def test_sh_schedule_reference_values():
    assert sh_schedule(8, 240) == (3, [10, 20, 40], [8, 4, 2, 1])
    assert sh_schedule(5, 100) == (3, [6, 11, 16], [5, 3, 2, 1])


def _sh_reference(pulls, table, reuse=True):
    """Plain SH on fixed reward sequences: the survivors after each round."""
    n_arms = table.shape[0]
    alive, pulled, survivors = list(range(n_arms)), np.zeros(n_arms, int), []
    for t in pulls:
        lo = pulled.copy()
        for a in alive:
            pulled[a] += t
        first = {a: (0 if reuse else lo[a]) for a in alive}
        n = {a: pulled[a] - first[a] for a in alive}
        s = {a: table[a, first[a] : pulled[a]].sum() for a in alive}
        alive = halve(alive, n, s)
        survivors.append(alive)
    return survivors


@pytest.mark.parametrize(("n_arms", "budget"), [(8, 240), (5, 100)])
def test_sh_rounds_quotas_and_survivors(n_arms, budget):
    rounds, pulls, sizes = sh_schedule(n_arms, budget)
    rng = np.random.default_rng(n_arms)
    table = (rng.uniform(size=(n_arms, budget)) < np.linspace(0.2, 0.7, n_arms)[:, None]) * 1.0
    table[n_arms - 1] = table[n_arms - 2]  # two identical arms: ties go to the lower slot
    survivors = _sh_reference(pulls, table)
    pol = make("sequential_halving", budget=budget)
    st = pol.init(n_arms)
    # before any feedback select previews the start: uniform over the active arms
    close(pol.select(st, None, keys(1)).probs[0, :n_arms], np.full(n_arms, 1 / n_arms))
    alive, pulled, spent = list(range(n_arms)), np.zeros(n_arms, int), 0
    for r, t in enumerate(pulls):
        # one arm gets its quota first: it stops being selected until the round ends
        first = alive[0]
        st = pol.update(
            st, None, np.full(t, first), table[first, pulled[first] : pulled[first] + t]
        )
        probs = pol.select(st, None, keys(1, f"mid{r}")).probs[0, :n_arms]
        rest = [a for a in alive if a != first]
        close(probs, np.isin(np.arange(n_arms), rest) / len(rest))
        arms = np.repeat(rest, t)
        rew = np.concatenate([table[a, pulled[a] : pulled[a] + t] for a in rest])
        st = pol.update(st, None, arms, rew)
        pulled[alive] += t
        spent += t * len(alive)
        s = stats_of(st)
        assert s["N0"] == n_arms and s["R"] == rounds and s["mode"] == 0
        assert s["spent"] == spent
        alive = survivors[r]
        assert np.flatnonzero(s["alive"]).tolist() == alive, r
        assert len(alive) == sizes[r + 1]
        if r + 1 < rounds:
            assert s["done"] == 0 and s["round"] == r + 1 and s["size"] == sizes[r + 1]
            assert float(np.asarray(sh_quota(pol.kernels.h, st.stats))) == pulls[r + 1]
            probs = pol.select(st, None, keys(1, f"start{r}")).probs[0, :n_arms]
            close(probs, np.isin(np.arange(n_arms), alive) / len(alive))
    s = stats_of(st)
    assert s["done"] == 1 and spent <= budget
    slot, conf = identified("sequential_halving", pol.hyper, st)
    assert slot == survivors[-1][0] and math.isnan(conf)
    # after the last round only the survivor is played, and nothing more is spent
    out = pol.select(st, None, keys(8, "exploit"))
    assert np.all(out.arms == slot) and np.all(out.propensity == 1.0)
    st = pol.update(st, None, out.arms, np.zeros(8))
    assert stats_of(st)["spent"] == spent


@pytest.mark.parametrize(("reuse", "winner"), [(True, 0), (False, 3)])
def test_sh_reuse_flag_and_ties(reuse, winner):
    """N=4, T=16: R=2, t=(2, 4). Round 0 keeps arms 0 (1.0) and 3 (0.5). Round 1: arm 0 scores
    0.5, arm 3 0.75; over all samples both have 4/6, a tie that goes to the lower slot."""
    table = np.array(
        [[1, 1, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 1, 1, 0, 1]], float
    )
    assert _sh_reference([2, 4], table, reuse)[-1] == [winner]
    pol = make("sequential_halving", budget=16, reuse=reuse)
    st = pol.update(pol.init(4), None, np.repeat(np.arange(4), 2), table[:, :2].ravel())
    assert np.flatnonzero(stats_of(st)["alive"]).tolist() == [0, 3]
    st = pol.update(st, None, np.repeat([0, 3], 4), table[[0, 3], 2:].ravel())
    assert identified("sequential_halving", pol.hyper, st)[0] == winner


# --- bracketing SH ------------------------------------------------------------------------------


def test_bracket_hash_matches_numpy_and_draws_uniform_subsets():
    slots = np.arange(64)
    for seed, ell in [(0, 1), (7, 3), (2**32 - 1, 6)]:
        got = np.asarray(bracket_hash(seed, ell, slots)).astype(np.uint64)
        np.testing.assert_array_equal(got, hash_reference(seed, ell, slots))
    # the m smallest hashes of N arms: every arm is in a bracket of size 4 w.p. 4/10
    hits = np.zeros(10)
    for seed in range(2000):
        u = hash_reference(seed, 2, np.arange(10))
        hits[np.argsort(u, kind="stable")[:4]] += 1
    assert np.all(np.abs(hits / 2000 - 0.4) < 4 * math.sqrt(0.24 / 2000)), hits


@pytest.mark.parametrize(("n_arms", "budget"), [(10, 36), (64, 60)])
def test_bracketing_schedule(n_arms, budget):
    """T < N ceil(log2 N): brackets of size min(N, 2^l), budget floor(T/L) each, the ones that
    cannot afford m ceil(log2 m) pulls skipped; SH inside each on its own samples."""
    plan = brackets_reference(n_arms, budget)
    # hand values: N=10, T=36: L=4, T_l=9, m=(2, 4, 8, 10) cost (2, 8, 24, 40): brackets 1, 2;
    # N=64, T=60: L=6, T_l=10, m=(2, 4, 8, ...) cost (2, 8, 24, ...): brackets 1, 2
    assert [(e, m, tl, p) for e, m, tl, _, p in plan] == (
        [(1, 2, 9, [4]), (2, 4, 9, [1, 2])]
        if n_arms == 10
        else [(1, 2, 10, [5]), (2, 4, 10, [1, 2])]
    )
    rng = np.random.default_rng(budget)
    table = (rng.uniform(size=(n_arms, budget)) < rng.uniform(size=n_arms)[:, None]) * 1.0
    pol = make("sequential_halving", budget=budget)
    st = pol.init(n_arms)
    # select previews bracket 1 before any feedback
    probs = pol.select(st, None, keys(1)).probs[0, :n_arms]
    close(probs, np.isin(np.arange(n_arms), plan[0][3]) / plan[0][1])
    pulled, spent, winners = np.zeros(n_arms, int), 0, []
    for ell, _, _, members, pulls in plan:
        alive = members
        lo = pulled.copy()  # the bracket ranks on its own samples
        for r, t in enumerate(pulls):
            s = stats_of(st) if spent else None
            if s is not None:
                assert s["mode"] == 1 and s["bracket"] == ell and s["round"] == r
                assert np.flatnonzero(s["alive"]).tolist() == alive
                assert float(np.asarray(sh_quota(pol.kernels.h, st.stats))) == t
            arms = np.repeat(alive, t)
            rew = np.concatenate([table[a, pulled[a] : pulled[a] + t] for a in alive])
            st = pol.update(st, None, arms, rew)
            pulled[alive] += t
            spent += t * len(alive)
            n = {a: pulled[a] - lo[a] for a in alive}
            sm = {a: table[a, lo[a] : pulled[a]].sum() for a in alive}
            alive = halve(alive, n, sm)
        winners.append(alive[0])
    s = stats_of(st)
    assert s["done"] == 1 and s["spent"] == spent <= budget
    assert np.flatnonzero(s["win"]).tolist() == sorted(set(winners))
    total = {a: table[a, : pulled[a]].mean() for a in winners}
    best = min(winners, key=lambda a: (-total[a], a))
    assert identified("sequential_halving", pol.hyper, st)[0] == best


def test_bracketing_modes():
    # auto: plain SH when t_0 >= 1 (T = N R), bracketing just below
    for budget, mode in [(40, 0), (39, 1)]:
        st = make("sequential_halving", budget=budget).update(
            make("sequential_halving").init(10), None, [0], [1.0]
        )
        assert stats_of(st)["mode"] == mode
    st = make("sequential_halving", budget=1000, bracketing="on").update(
        make("sequential_halving").init(10), None, [0], [1.0]
    )
    assert stats_of(st)["mode"] == 1
    # off with t_0 = 0: plain SH, at least one pull per arm and round (may exceed T)
    pol = make("sequential_halving", budget=20, bracketing="off")
    st = pol.update(pol.init(10), None, [0], [1.0])
    s = stats_of(st)
    assert s["mode"] == 0 and float(np.asarray(sh_quota(pol.kernels.h, st.stats))) == 1
    # nothing affordable (T < 2 L): done at once, nothing identified, uniform selection
    pol = make("sequential_halving", budget=7)
    st = pol.update(pol.init(10), None, [0], [1.0])
    assert stats_of(st)["done"] == 1
    assert identified("sequential_halving", pol.hyper, st)[0] == -1
    close(pol.select(st, None, keys(1)).probs[0, :10], np.full(10, 0.1))


# --- identification on simulated Bernoulli arms (200 seeds, one compiled run each) ---------------

MEANS = np.array([0.3, 0.45, 0.8, 0.5, 0.2, 0.4, 0.35, 0.5, 0.25, 0.1])  # best: slot 2, gap 0.3
BEST = 2
SEEDS = range(200)


def _per_round_rewards(res) -> np.ndarray:
    return np.diff(res.reward, axis=1, prepend=0.0)


def test_se_identifies_the_best_arm_with_confidence():
    delta, horizon = 0.05, 8000
    res = sim.run(
        make("successive_elimination", delta=delta), sim.bernoulli(means=MEANS), horizon, SEEDS
    )
    arms, rew = res.arms, _per_round_rewards(res)
    S, K = arms.shape[0], len(MEANS)
    idx = np.arange(S)
    n, s = np.zeros((S, K)), np.zeros((S, K))
    elim = np.zeros((S, K), bool)
    finished = np.full(S, -1)
    for t in range(horizon):
        surv = ~elim
        # every decision picks a survivor, uniformly: propensity 1/|survivors|
        assert surv[idx, arms[:, t]].all(), t
        close(res.propensity[:, t], 1.0 / surv.sum(1), 1e-12)
        n[idx, arms[:, t]] += 1
        s[idx, arms[:, t]] += rew[:, t]
        safe = np.maximum(n, 1)
        radius = np.where(n > 0, np.sqrt(np.log(4 * K * safe**2 / delta) / safe), np.inf)
        mean = s / safe
        best = np.where(surv, mean - radius, -np.inf).max(1, keepdims=True)
        elim |= surv & (mean + radius < best)
        done = (~elim).sum(1) == 1
        finished[done & (finished < 0)] = t + 1
    winner = np.where(finished > 0, np.argmax(~elim, axis=1), -1)
    errors = int((winner != BEST).sum())  # not finished by T counts as an error
    bound = delta + 3 * math.sqrt(delta * (1 - delta) / len(SEEDS))
    print(
        f"SE: {int((finished > 0).sum())}/{S} finished by T={horizon} (latest at "
        f"{finished.max()}), error rate {errors / S:.3f} <= {bound:.3f}"
    )
    assert (finished > 0).sum() >= 0.99 * S  # T is chosen so that SE practically always ends
    assert errors / S <= bound


def _replay_sh(arms_row, rew_row, brackets, n_arms):
    """Check one seed's decisions against SH's schedule: every bracket round pulls each alive
    arm exactly t_r times; returns (identified arm, pulls before it was determined)."""
    p, winners = 0, []
    for members, pulls in brackets:
        alive = list(members)
        bn, bs = np.zeros(n_arms), np.zeros(n_arms)
        for t in pulls:
            seg, rr = arms_row[p : p + len(alive) * t], rew_row[p : p + len(alive) * t]
            cnt = np.bincount(seg, minlength=n_arms)
            assert (cnt[alive] == t).all() and cnt.sum() == len(alive) * t
            np.add.at(bn, seg, 1.0)
            np.add.at(bs, seg, rr)
            p += len(alive) * t
            alive = halve(alive, bn, bs)
        winners.append(alive[0])
    n = np.bincount(arms_row[:p], minlength=n_arms)
    s = np.bincount(arms_row[:p], weights=rew_row[:p], minlength=n_arms)
    best = min(winners, key=lambda a: (-s[a] / n[a], a))
    assert (arms_row[p:] == best).all()  # then only the survivor is played
    return best, p


@pytest.mark.parametrize(
    ("budget", "horizon"), [(2000, 2100), (36, 60)], ids=["plain", "bracketing"]
)
def test_sh_identification_within_budget(budget, horizon):
    K = len(MEANS)
    rounds, pulls, _ = sh_schedule(K, budget)
    if budget >= K * rounds:
        brackets = [(range(K), pulls)]
    else:
        brackets = [(members, p) for _, _, _, members, p in brackets_reference(K, budget)]
    res = sim.run(
        make("sequential_halving", budget=budget), sim.bernoulli(means=MEANS), horizon, SEEDS
    )
    rew = _per_round_rewards(res)
    found, spent = zip(
        *(_replay_sh(res.arms[i], rew[i], brackets, K) for i in range(len(SEEDS))), strict=True
    )
    spent, errors = np.array(spent), int((np.array(found) != BEST).sum())
    print(
        f"SH budget {budget}: error rate {errors / len(SEEDS):.3f}, pulls before the survivor "
        f"was known: max {spent.max()} <= {budget}"
    )
    assert (spent <= budget).all()
    if budget >= K * rounds:
        assert errors / len(SEEDS) <= 0.05  # 250 pulls each for the last two arms, gap >= 0.3
