"""latent_matching_score against closed forms and, when installed, against drvi-py's
``DiscreteDisentanglementBenchmark`` on the same inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scvae_beta import metrics

L2 = np.log(2.0)


def test_smi_aggregates_by_hand():
    # two categories of 4 cells; dim 0 separates them, dim 1 half does, dim 2 is constant
    labels = np.array(["a"] * 4 + ["b"] * 4)
    z = np.column_stack(
        [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1, 1], np.full(8, 3.0)]
    ).astype(float)
    res = metrics.latent_matching_score(z, labels, n_bins=2)
    # dim 1: bins (0: 2 a), (1: 2 a + 4 b); I = H(ind) - H(ind | bin) = log 2 - 3/4 H(1/3)
    h13 = -(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3))
    m1 = (L2 - 0.75 * h13) / L2
    np.testing.assert_allclose(res["matrix"], [[1, 1], [m1, m1], [0, 0]], atol=1e-12)
    assert res["score"] == pytest.approx((1 + m1) / 2)  # one dim per category
    assert res["msas"] == pytest.approx(1.0)
    assert res["msgs"] == pytest.approx(1 - m1)


def test_spn_closed_forms():
    rng = np.random.default_rng(0)
    codes = np.repeat([0, 1, 2], [50, 30, 20])
    z = np.column_stack([codes + 0.1 * rng.random(100), rng.normal(size=100)])
    res = metrics.latent_matching_score(z, codes, metric="spn")
    # contiguous runs along dim 0: every category scores 1
    np.testing.assert_allclose(res["matrix"][0], 1.0)
    # dim 0 takes any category, the noise dim its best one, the third stays unmatched
    assert res["score"] == pytest.approx((1 + res["matrix"][1].max()) / 3, abs=1e-12)
    # one hand-counted order: a a b a b b (n=6, 3 each): a-a pairs 1 -> 1/2 - 1/2 = 0
    z2 = np.arange(6.0)[:, None]
    lab = np.array(list("aababb"))
    m = metrics.latent_matching_score(z2, lab, metric="spn")["matrix"]
    np.testing.assert_allclose(m, [[0.0, 0.0]])
    lab = np.array(list("aaabbb"))  # (2/2 - 1/2) / (1 - 1/2) = 1
    np.testing.assert_allclose(metrics.latent_matching_score(z2, lab, metric="spn")["matrix"], 1)
    lab = np.array(list("aaaabb"))  # a: (3/3 - 4/6)/(2/6) = 1, b: (1/1 - 2/6)/(4/6) = 1
    np.testing.assert_allclose(metrics.latent_matching_score(z2, lab, metric="spn")["matrix"], 1)


def test_spn_noise_is_near_zero_and_singletons_score_zero():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, 4000)
    m = metrics.latent_matching_score(rng.normal(size=(4000, 3)), codes, metric="spn")["matrix"]
    assert m.max() < 0.05
    codes[0] = 9  # a category with one cell
    m = metrics.latent_matching_score(rng.normal(size=(4000, 2)), codes, metric="spn")["matrix"]
    assert np.isfinite(m).all() and (m[:, -1] == 0).all()


def test_smi_bins_like_kbins_in_the_input_dtype():
    from sklearn.preprocessing import KBinsDiscretizer

    rng = np.random.default_rng(2)
    z = rng.normal(size=(500, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 500)
    res = metrics.latent_matching_score(z, labels)
    bins = KBinsDiscretizer(n_bins=10, encode="ordinal", strategy="uniform").fit_transform(z)
    from sklearn.metrics import mutual_info_score

    ind = labels == 1
    expected = mutual_info_score(bins[:, 2], ind) / mutual_info_score(ind, ind)
    assert res["matrix"][2, 1] == pytest.approx(expected, rel=1e-12)


def test_unknown_metric():
    with pytest.raises(ValueError, match="'smi' or 'spn'"):
        metrics.latent_matching_score(np.zeros((4, 1)), [0, 0, 1, 1], metric="asc")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_drvi_py(dtype):
    bench = pytest.importorskip("drvi.utils.metrics").DiscreteDisentanglementBenchmark
    rng = np.random.default_rng(3)
    n, k = 1500, 6
    codes = rng.integers(0, 5, n)
    z = rng.normal(size=(n, k))
    z[:, 0] += 3 * (codes == 0)  # some structure
    z[:, 3] += 2 * (codes == 2) - 1.5 * (codes == 4)
    z = z.astype(dtype)
    labels = pd.Series(np.array(["t0", "t1", "t2", "t3", "t4"])[codes])
    b = bench(z, discrete_target=labels, metrics=("SMI", "SPN"))
    b.evaluate()
    ref = b.get_results()
    for metric in ("smi", "spn"):
        ours = metrics.latent_matching_score(z, labels, metric=metric)
        name = metric.upper()
        assert ours["score"] == pytest.approx(ref[f"LMS-{name}"], abs=1e-12)
        assert ours["msas"] == pytest.approx(ref[f"MSAS-{name}"], abs=1e-12)
        assert ours["msgs"] == pytest.approx(ref[f"MSGS-{name}"], abs=1e-12)


# --- ties along a latent dimension (SPN) --------------------------------------------------------


def test_spn_ties_do_not_depend_on_the_cell_order():
    # A collapsed (constant) dimension scored 1 for every category when the cells were sorted
    # by label, since numpy.argsort kept tied cells in their input order (0.04 shuffled).
    rng = np.random.default_rng(0)
    lab = np.repeat(["a", "b", "c"], 40)
    z = np.c_[rng.normal(size=(120, 3)), np.zeros(120)]
    ordered = metrics.latent_matching_score(z, lab, metric="spn")
    np.testing.assert_allclose(ordered["matrix"][3], 0.0, atol=1e-12)
    perm = rng.permutation(120)
    shuffled = metrics.latent_matching_score(z[perm], lab[perm], metric="spn")
    np.testing.assert_allclose(shuffled["matrix"], ordered["matrix"], rtol=0, atol=1e-12)
    assert shuffled["score"] == pytest.approx(ordered["score"], abs=1e-12)


def test_spn_ties_average_the_pair_count_over_every_order_by_brute_force():
    import itertools

    values = np.array([2, 0, 1, 0, 2, 1, 0, 2], dtype=float)  # runs of 3, 2 and 3 tied cells
    codes = np.array([1, 0, 0, 1, 1, 1, 0, 1])
    z = np.c_[values, np.arange(8.0)[::-1]]  # dim 1 has no ties: the one order
    runs = [np.flatnonzero(values == v) for v in (0, 1, 2)]
    n, counts = 8, np.bincount(codes)
    expected = []
    every_order = [np.concatenate(p) for p in itertools.product(*map(itertools.permutations, runs))]
    for orders in (every_order, [np.argsort(z[:, 1])]):  # dim 0, dim 1
        pairs = np.zeros(2)
        for order in orders:  # 3! * 2! * 3! = 72 orders for dim 0
            c = codes[order]
            same = c[:-1] == c[1:]
            pairs += np.bincount(c[:-1][same], minlength=2)
        frac = pairs / len(orders) / (counts - 1)
        expected.append(np.clip(frac - counts / n, 0, None) / (1 - counts / n))
    res = metrics.latent_matching_score(z, codes, metric="spn")
    assert (expected[0] > 0).all() and np.ptp(expected[0]) > 0  # a non-trivial check
    np.testing.assert_allclose(res["matrix"], expected, rtol=0, atol=1e-12)


# --- labels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        pd.Series([1, "1", 2] * 4),
        np.array([1, "1", 2] * 4, dtype=object),
        [1, "1", 2] * 4,  # NumPy would have merged these into the text "1"
        pd.Categorical([1, "1", 2] * 4),
    ],
)
def test_labels_whose_values_read_the_same_as_text_are_refused(labels):
    # 1 and "1" were two categories both named "1": the matching dict lost one of them.
    z = np.random.default_rng(0).normal(size=(12, 3))
    with pytest.raises(ValueError, match=r"read the same as text \(1 and '1'\).*astype\(str\)"):
        metrics.latent_matching_score(z, labels)
    with pytest.raises(ValueError, match="read the same as text"):
        metrics.cluster_agreement(z, labels, n_neighbors=5)


def test_mixed_type_labels_that_read_differently_stay_distinct():
    z = np.arange(12.0)[:, None] * np.ones((1, 2))
    res = metrics.latent_matching_score(z, [1] * 6 + ["a"] * 6, metric="spn")
    assert res["categories"] == ["1", "a"] and set(res["matching"]) == {"1", "a"}


def test_cluster_agreement_refuses_a_single_category_like_latent_matching_score():
    # It returned ARI = NMI = 0 silently.
    z = np.random.default_rng(0).normal(size=(20, 2))
    for score in (metrics.latent_matching_score, metrics.cluster_agreement):
        with pytest.raises(ValueError, match=r"labels has a single category \('T'\)"):
            score(z, ["T"] * 20)


# --- cluster_agreement's resolution grid ---------------------------------------------------------


@pytest.mark.parametrize(
    "resolution",
    [[True, 0.5], (0.5, np.True_), ["0.5", "1"], np.array(["0.5"]), [0.5, None], [[0.5]]],
)
def test_cluster_agreement_refuses_bools_and_strings_inside_a_sequence(resolution):
    # Each element was converted with float(): True passed as 1.0 and "0.5" as 0.5.
    z = np.random.default_rng(0).normal(size=(12, 2))
    with pytest.raises(ValueError, match="positive number, 'optimal' or a sequence"):
        metrics.cluster_agreement(z, [0, 1] * 6, resolution=resolution, n_neighbors=5)


def test_cluster_agreement_grid_order_does_not_change_the_choice():
    # Three separated blobs: NMI 1 at 0.05 and 0.2, less at 0.5. Reversed, the grid used to
    # keep the first maximum met, 0.2; the grid is now searched ascending, smallest kept.
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(3), 30)
    z = np.array([[0, 0], [10, 0], [0, 10]])[group] + rng.normal(size=(90, 2))
    grid = [np.float32(0.05), 0.2, np.float64(0.5)]
    up = metrics.cluster_agreement(z, group, resolution=grid, n_neighbors=10)
    down = metrics.cluster_agreement(z, group, resolution=grid[::-1], n_neighbors=10)
    assert up["nmi"] == down["nmi"] == 1.0
    assert up["resolution"] == down["resolution"] == pytest.approx(0.05)
    np.testing.assert_array_equal(up["clusters"], down["clusters"])


def test_cluster_agreement_on_constant_latents_leaks_no_sparse_warning():
    # Tied cells make scanpy set the diagonal of a csr_matrix: SciPy's SparseEfficiencyWarning.
    import warnings

    from scipy.sparse import SparseEfficiencyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", SparseEfficiencyWarning)
        res = metrics.cluster_agreement(np.zeros((30, 2)), [0, 1] * 15, n_neighbors=5)
    assert 0.0 <= res["nmi"] <= 1.0 and res["clusters"].shape == (30,)
