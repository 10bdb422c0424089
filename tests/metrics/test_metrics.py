"""scvae_beta.metrics: hand-computed cases, disentanglement_lib reference values, sanity
checks (perfect ~ 1, noise ~ 0, constant = 0, rotation lower), independent cross-checks and
input errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from scipy.stats import special_ortho_group
from sklearn.metrics import adjusted_rand_score, mutual_info_score, normalized_mutual_info_score

from scvae_beta import metrics
from scvae_beta.metrics._dci import _dci_aggregate, _entropy_rows
from scvae_beta.metrics._info import entropy, mutual_info, mutual_info_matrix
from scvae_beta.metrics._inputs import split_indices
from scvae_beta.metrics._mig import _mig_from_mi
from scvae_beta.metrics._modularity import _modularity_from_mi
from scvae_beta.metrics._sap import _r2_matrix

L2, L3 = np.log(2.0), np.log(3.0)
#: I(z1; f1) of the hand case below: 3/2 log 2 - 3/4 log 3 nats.
A_HAND = 1.5 * L2 - 0.75 * L3


# --- data ------------------------------------------------------------------------------------


def _hand_case():
    """8 cells, 2 binary factors; z0 = f0, z1 = 1 on cells 3 and 7 only."""
    f = np.array([[0, 0], [0, 0], [0, 1], [0, 1], [1, 0], [1, 0], [1, 1], [1, 1]])
    z = np.array([[0, 0], [0, 0], [0, 0], [0, 1], [1, 0], [1, 0], [1, 0], [1, 1]], float)
    return z, f


def _factors(n=1000, k=3, n_values=5, seed=0):
    return np.random.default_rng(seed).integers(0, n_values, size=(n, k))


def _perfect(f, seed=1):
    return f + 0.01 * np.random.default_rng(seed).normal(size=f.shape)


def _rotated(f):
    z = _perfect(f)
    return (z - z.mean(0)) @ special_ortho_group.rvs(f.shape[1], random_state=1)


def _noise(f, seed=2):
    return np.random.default_rng(seed).normal(size=f.shape)


def _dl_identity(n):
    """disentanglement_lib's IdentityObservationsData: 10 factors, values 1..10, seed 0."""
    f = np.random.RandomState(0).randint(1, 11, size=(n, 10))
    return f.astype(float), f


# --- hand-computed cases -----------------------------------------------------------------------


def test_hand_case_mi_matrix_mig_modularity():
    z, f = _hand_case()
    # I(z0;f0) = log 2 (z0 = f0); I(z0;f1) = I(z1;f0) = 0 (independent within the 8 cells);
    # I(z1;f1): p(z=0,f=0)=1/2, p(z=0,f=1)=1/4, p(z=1,f=1)=1/4 with p(z=0)=3/4, p(f=.)=1/2:
    # 1/2 log(4/3) + 1/4 log(2/3) + 1/4 log 2 = 3/2 log 2 - 3/4 log 3 ~ 0.2158 nats.
    mi = mutual_info_matrix(metrics.histogram_bins(z, 2), f)
    np.testing.assert_allclose(mi, [[L2, 0.0], [0.0, A_HAND]], atol=1e-12)
    # MIG = mean(L2 / L2, A / L2) since H(f0) = H(f1) = log 2.
    assert metrics.mig(z, f, n_bins=2) == pytest.approx((1 + A_HAND / L2) / 2, abs=1e-12)
    assert metrics.mig(z, f, n_bins=2) == pytest.approx(0.655639, abs=1e-6)
    # each code informs one factor only: delta = 0, modularity 1.
    assert metrics.modularity(z, f, n_bins=2) == pytest.approx(1.0)


def test_hand_case_with_entangled_third_dim():
    z, f = _hand_case()
    z = np.column_stack([z, 2 * f[:, 0] + f[:, 1]])  # z2 determines both factors
    # MI matrix [[L, 0], [0, A], [L, L]] (4 bins keep z2's four values apart).
    mi = mutual_info_matrix(metrics.histogram_bins(z, 4), f)
    np.testing.assert_allclose(mi, [[L2, 0], [0, A_HAND], [L2, L2]], atol=1e-12)
    # f0: top two L, L -> gap 0; f1: top two L, A -> gap (L - A) / L.
    assert metrics.mig(z, f, n_bins=4) == pytest.approx((1 - A_HAND / L2) / 2, abs=1e-12)
    # z2: theta = L^2, delta = (2 L^2 - L^2) / (L^2 (2 - 1)) = 1 -> 0; mean (1 + 1 + 0) / 3.
    assert metrics.modularity(z, f, n_bins=4) == pytest.approx(2 / 3)


def test_dci_aggregation_hand_matrix():
    r = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    d, c = _dci_aggregate(r)
    # rho_code = (1/3, 2/3, 0); 1 - H_2 per code = (1, 0, 0)  -> D = 1/3.
    assert d == pytest.approx(1 / 3, abs=1e-8)
    # rho_factor = (2/3, 1/3); 1 - H_3 per factor = (1 - log 2 / log 3, 1).
    assert c == pytest.approx(2 / 3 * (1 - L2 / L3) + 1 / 3, abs=1e-8)


def test_mig_single_latent_dimension_uses_zero_second():
    z, f = _hand_case()
    # one dim: gap = I(z1; f) - 0 for each factor: (0 + A) / L / 2.
    assert metrics.mig(z[:, 1:], f, n_bins=2) == pytest.approx(A_HAND / L2 / 2, abs=1e-12)
    assert _mig_from_mi(np.array([[0.5, 0.2]]), np.array([1.0, 0.4])) == pytest.approx(0.5)


# --- disentanglement_lib's own test values -------------------------------------------------------


def test_dl_utils_reference_values():
    x = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]]).T
    np.testing.assert_array_equal(
        metrics.histogram_bins(x, 3).T, [[1, 1, 2, 2, 3, 3], [3, 3, 2, 2, 1, 1]]
    )
    assert entropy(np.array([1, 1, 2, 2, 3, 3])) == pytest.approx(L3)
    xs = np.array([[1, 2, 1, 2], [1, 1, 2, 2]]).T
    ys = np.array([[1, 2, 1, 2], [2, 2, 1, 1]]).T
    np.testing.assert_allclose(mutual_info_matrix(xs, ys), [[L2, 0], [0, L2]], atol=1e-12)


_D5 = np.diag(5.0 * np.ones(5))
_MATRICES = {
    "diagonal": _D5,
    "diagonal_empty_codes": np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]),
    "zero": np.zeros((10, 10)),
    "redundant_codes": np.vstack([_D5, _D5]),
    "missed_factors": _D5[:2, :],
    "one_code_two_factors": np.hstack([_D5, _D5]),
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("diagonal", 1.0),
        ("diagonal_empty_codes", 2 / 3),
        ("zero", 0.0),
        ("redundant_codes", 1.0),
        ("missed_factors", 1.0),
        ("one_code_two_factors", 1 - 1 / 9),
    ],
)
def test_modularity_dl_reference_matrices(name, expected):
    assert _modularity_from_mi(_MATRICES[name]) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("name", "disentanglement", "completeness"),
    [
        ("diagonal", 1.0, 1.0),
        ("diagonal_empty_codes", 1.0, 1.0),
        ("zero", 0.0, 0.0),
        ("redundant_codes", 1.0, 1 - L2 / np.log(10)),
        ("missed_factors", 1.0, 1.0),
        ("one_code_two_factors", 1 - L2 / np.log(10), 1.0),
    ],
)
def test_dci_dl_reference_matrices(name, disentanglement, completeness):
    d, c = _dci_aggregate(_MATRICES[name])
    assert d == pytest.approx(disentanglement, abs=1e-7)
    assert c == pytest.approx(completeness, abs=1e-7)


def test_dl_identity_data_mig_modularity_sap():
    z, f = _dl_identity(3000)
    assert 0.9 <= metrics.mig(z, f) <= 1.0
    assert 0.0 <= metrics.mig(np.zeros_like(z), f) <= 0.2
    assert 0.0 <= metrics.mig(np.hstack([z, z]), f) <= 0.1
    assert 0.9 <= metrics.modularity(z, f) <= 1.0
    assert 0.9 <= metrics.modularity(np.hstack([z, z]), f) <= 1.0
    assert 0.9 <= metrics.sap(z, f, continuous=True) <= 1.0
    assert 0.0 <= metrics.sap(np.zeros_like(z), f, continuous=True) <= 0.2
    assert 0.0 <= metrics.sap(np.hstack([z, z]), f, continuous=True) <= 0.2


def test_dl_permuted_codes_have_low_modularity():
    z, f = _dl_identity(20000)
    z = np.random.default_rng(0).permuted(z, axis=1)  # each cell's values shuffled over dims
    assert 0.0 <= metrics.modularity(z, f) <= 0.2


# --- sanity: perfect ~ 1, noise ~ 0, constant = 0, rotation lower --------------------------------


def test_mig_modularity_sanity():
    f = _factors()
    perfect, rotated = _perfect(f), _rotated(f)
    assert metrics.mig(perfect, f) > 0.97
    assert metrics.modularity(perfect, f) > 0.99
    assert metrics.mig(_noise(f), f) < 0.03
    assert metrics.mig(np.zeros(f.shape), f) == 0.0
    assert metrics.modularity(np.zeros(f.shape), f) == 0.0
    assert metrics.mig(rotated, f) < metrics.mig(perfect, f) - 0.5
    assert metrics.modularity(rotated, f) < metrics.modularity(perfect, f) - 0.2


def test_dci_sanity():
    f = _factors(n=800)
    perfect = metrics.dci(_perfect(f), f, n_estimators=10)
    assert perfect["disentanglement"] > 0.99 and perfect["completeness"] > 0.99
    assert perfect["informativeness_test"] > 0.99
    noise = metrics.dci(_noise(f), f, n_estimators=10)
    assert noise["disentanglement"] < 0.1 and noise["completeness"] < 0.1
    assert noise["informativeness_test"] < 0.35  # chance is 0.2
    const = metrics.dci(np.zeros(f.shape), f, n_estimators=10)
    assert const["disentanglement"] == pytest.approx(0.0, abs=1e-9)
    assert const["completeness"] == pytest.approx(0.0, abs=1e-9)
    rotated = metrics.dci(_rotated(f), f, n_estimators=10)
    assert rotated["disentanglement"] < 0.6 and rotated["completeness"] < 0.6
    assert set(perfect) == {
        "disentanglement",
        "completeness",
        "informativeness_train",
        "informativeness_test",
    }


def test_sap_sanity_discrete():
    f = _factors(k=3, n_values=2)
    # balanced binary factors: the matching code scores accuracy 1, an unrelated code about
    # 0.5 (chance), so a perfect code's SAP is about 1 - 0.5, not 1.
    assert metrics.sap(_perfect(f), f) == pytest.approx(0.5, abs=0.07)
    perfect_and_constant = np.column_stack([_perfect(f)[:, :1], np.zeros((1000, 2))])
    assert metrics.sap(perfect_and_constant, f[:, 0]) == pytest.approx(1.0)  # constant -> 0
    assert metrics.sap(_noise(f), f) < 0.1
    assert metrics.sap(np.zeros(f.shape), f) == 0.0
    assert metrics.sap(_rotated(f), f) < metrics.sap(_perfect(f), f) - 0.2


def test_sap_continuous_is_gap_of_squared_correlations():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(500, 2))
    z = np.column_stack([y[:, 0] + 0.5 * rng.normal(size=500), y[:, 1], rng.normal(size=500)])
    r2 = np.array([[np.corrcoef(z[:, i], y[:, k])[0, 1] ** 2 for k in range(2)] for i in range(3)])
    np.testing.assert_allclose(_r2_matrix(z, y), r2, atol=1e-12)
    top = np.sort(r2, axis=0)
    assert metrics.sap(z, y, continuous=True) == pytest.approx(np.mean(top[-1] - top[-2]))


# --- independent cross-checks ------------------------------------------------------------------


def test_mutual_info_and_entropy_match_sklearn_and_brute_force():
    rng = np.random.default_rng(4)
    for na, nb in [(2, 2), (3, 7), (20, 5), (1, 4)]:
        a, b = rng.integers(0, na, 300), rng.integers(0, nb, 300)
        b = np.where(rng.random(300) < 0.5, a % nb, b)  # make them dependent
        assert mutual_info(a, b) == pytest.approx(mutual_info_score(a, b), abs=1e-12)
        p = np.array([np.mean(a == v) for v in np.unique(a)])
        assert entropy(a) == pytest.approx(-sum(pi * np.log(pi) for pi in p), abs=1e-12)
        assert entropy(a) == pytest.approx(mutual_info(a, a), abs=1e-12)


def test_histogram_bins_match_numpy_histogram():
    x = np.random.default_rng(5).gamma(2.0, size=(500, 3))
    codes = metrics.histogram_bins(x, 7)
    for j in range(3):
        counts, edges = np.histogram(x[:, j], 7)
        np.testing.assert_array_equal(codes[:, j], np.digitize(x[:, j], edges[:-1]))
        np.testing.assert_array_equal(np.bincount(codes[:, j], minlength=8)[1:], counts)
        np.testing.assert_array_equal(codes[:, j], metrics.histogram_bins(x[:, j], 7))
    # a constant column falls in one bin (numpy widens its range to [3 - 0.5, 3 + 0.5]).
    np.testing.assert_array_equal(metrics.histogram_bins(np.full(5, 3.0), 4), np.full(5, 3))


def test_dci_aggregation_matches_independent_formula():
    r = np.random.default_rng(11).random((5, 3)) ** 3
    # disentanglement_lib's definition, written with scipy.stats.entropy (columns = outcomes)
    per_code = 1 - scipy.stats.entropy(r.T + 1e-11, base=3)
    per_factor = 1 - scipy.stats.entropy(r + 1e-11, base=5)
    expected_d = np.sum(per_code * r.sum(1) / r.sum())
    expected_c = np.sum(per_factor * r.sum(0) / r.sum())
    np.testing.assert_allclose(_dci_aggregate(r), (expected_d, expected_c), rtol=1e-12)
    np.testing.assert_allclose(_dci_aggregate(-r), (expected_d, expected_c), rtol=1e-12)


def test_dci_entropy_matches_scipy():
    w = np.random.default_rng(6).random((4, 3))
    expected = scipy.stats.entropy(w.T + 1e-11, base=3)
    np.testing.assert_allclose(_entropy_rows(w, base=3), expected, rtol=1e-12)


def test_labels_and_codes_give_identical_scores():
    f = _factors(n=600, k=2, n_values=3)
    z = _rotated(f)
    names = np.array(["G1", "S", "G2M"])
    as_str = np.column_stack([names[f[:, 0]], names[f[:, 1]]])
    frame = pd.DataFrame({"a": pd.Categorical(as_str[:, 0]), "b": as_str[:, 1]})
    assert metrics.mig(z, as_str) == metrics.mig(z, f)
    assert metrics.modularity(z, frame) == metrics.modularity(z, f)
    assert metrics.mig(z, f[:, 0]) == metrics.mig(z, f[:, :1])  # 1-D factors mean k = 1
    np.testing.assert_array_equal(metrics.factor_codes(f.astype(float) + 3), f)


# --- quantile bins ------------------------------------------------------------------------------


def test_quantile_bins_equal_counts_and_match_qcut():
    v = np.random.default_rng(7).normal(size=1000)
    codes = metrics.quantile_bins(v, 10)
    np.testing.assert_array_equal(np.bincount(codes), np.full(10, 100))
    np.testing.assert_array_equal(codes, pd.qcut(v, 10, labels=False))
    order = np.argsort(v)
    assert np.all(np.diff(codes[order]) >= 0)  # increasing with the value


def test_quantile_bins_keep_ties_together():
    v = np.concatenate([np.arange(200.0), np.full(300, 500.0), np.arange(1000.0, 1500.0)])
    codes = metrics.quantile_bins(v, 4)
    # raw bin = floor(4 (rank - 1) / 1000): ranks 1..200 -> 0; the 300 ties share min-rank
    # 201 -> 0 (bin 1, ranks 251..500, is left empty); ranks 501..750 -> 2, 751..1000 -> 3;
    # renumbered 0, 1, 2.
    assert np.all(codes[:500] == 0)
    np.testing.assert_array_equal(np.bincount(codes), [500, 250, 250])


# --- train/test split -------------------------------------------------------------------------


def test_split_indices():
    train, test = split_indices(400, test_size=0.25, shuffle=False, seed=0)
    np.testing.assert_array_equal(train, np.arange(300))
    np.testing.assert_array_equal(test, np.arange(300, 400))
    a = split_indices(401, test_size=0.25, shuffle=True, seed=3)
    b = split_indices(401, test_size=0.25, shuffle=True, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert len(a[1]) == 101  # ceil(0.25 * 401), as sklearn
    np.testing.assert_array_equal(np.sort(np.concatenate(a)), np.arange(401))


def _predictable_head(n=400, seed=8):
    """One binary factor equal to sign(z) on the first 75% of rows, random on the rest."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 1))
    y = (z[:, 0] > 0).astype(int)
    y[300:] = rng.integers(0, 2, n - 300)
    return z, y


def test_shuffle_false_tests_on_the_last_rows():
    z, y = _predictable_head()
    head = metrics.dci(z, y, shuffle=False, n_estimators=5, max_depth=1)
    assert head["informativeness_train"] == pytest.approx(1.0)
    assert head["informativeness_test"] < 0.65  # the last 100 rows are coin flips
    mixed = metrics.dci(z, y, shuffle=True, n_estimators=5, max_depth=1)
    assert mixed["informativeness_test"] > 0.75
    assert metrics.sap(z, y, shuffle=False) < 0.65 < metrics.sap(z, y, shuffle=True)


# --- edge cases --------------------------------------------------------------------------------


def test_constant_factor_is_left_out_with_warning():
    f = _factors(n=500, k=2)
    z = _rotated(f)
    with_const = np.column_stack([f, np.full(500, 4)])
    for fn in (metrics.mig, metrics.modularity):
        with pytest.warns(UserWarning, match=r"factor columns \[2\] are constant"):
            assert fn(z, with_const) == fn(z, f)
    with pytest.raises(ValueError, match="every factor is constant"):
        metrics.mig(z, np.ones(500))


def test_single_factor_conventions():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, 600)
    z = np.column_stack([y + 0.01 * rng.normal(size=600), np.zeros(600)])
    # modularity with K = 1: informative code -> 1, constant code -> 0.
    assert metrics.modularity(z, y) == pytest.approx(0.5)
    d, c = _dci_aggregate(np.array([[0.7], [0.3], [0.0]]))
    assert d == pytest.approx(1.0)
    assert c == pytest.approx(1 - scipy.stats.entropy([0.7, 0.3, 1e-11], base=3), abs=1e-8)


def test_single_class_in_training_rows_raises():
    y = np.r_[np.zeros(300, int), np.ones(100, int)]
    z = np.random.default_rng(0).normal(size=(400, 2))
    with pytest.raises(ValueError, match="single value in the training cells.*shuffle=True"):
        metrics.dci(z, y, shuffle=False, n_estimators=2)
    with pytest.raises(ValueError, match="single value in the training cells"):
        metrics.sap(z, y, shuffle=False)


# --- label metrics ------------------------------------------------------------------------------


def test_latent_matching_score_hand_case():
    labels = np.array(["a", "a", "b", "b", "c", "c", "c", "c"])
    z = np.array([0, 0, 1, 1, 1, 1, 1, 1], float)[:, None]
    res = metrics.latent_matching_score(z, labels, n_bins=2)
    # 'a': z separates it exactly -> 1.  'b': I = 1/2 log(32/27), H = log 4 - 3/4 log 3.
    # 'c': I = 3/2 log 2 - 3/4 log 3, H = log 2.
    expected = [1.0, 0.5 * np.log(32 / 27) / (np.log(4) - 0.75 * L3), A_HAND / L2]
    np.testing.assert_allclose(res["matrix"], [expected], atol=1e-12)
    assert res["categories"] == ["a", "b", "c"]
    assert res["matching"] == {"a": 0}
    assert res["score"] == pytest.approx(1 / 3)  # unmatched categories count 0


def test_latent_matching_score_recovers_permutation():
    rng = np.random.default_rng(10)
    codes = rng.integers(0, 3, 600)
    labels = pd.Categorical(np.array(["B", "NK", "T"])[codes])
    onehot = np.eye(3)[codes][:, [2, 0, 1]] + 0.01 * rng.normal(size=(600, 3))
    z = np.column_stack([onehot, rng.normal(size=600)])
    res = metrics.latent_matching_score(z, labels, n_bins=20)
    assert res["matching"] == {"B": 1, "NK": 2, "T": 0}
    assert res["score"] > 0.99
    ind = codes == 0
    bins = metrics.histogram_bins(z[:, 3], 20)
    assert res["matrix"][3, 0] == pytest.approx(
        mutual_info_score(ind, bins) / mutual_info_score(ind, ind)
    )
    with pytest.raises(ValueError, match="single category"):
        metrics.latent_matching_score(z, np.array(["T"] * 600))


def test_cluster_agreement_on_separated_blobs():
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(3), 100)
    z = np.array([[0, 0], [10, 0], [0, 10]])[group] + rng.normal(size=(300, 2))
    labels = np.array(["T", "B", "NK"])[group]
    res = metrics.cluster_agreement(z, labels, resolution=0.2)
    assert res["n_clusters"] == 3
    assert res["ari"] == pytest.approx(1.0) and res["nmi"] == pytest.approx(1.0)
    assert res["ari"] == adjusted_rand_score(labels, res["clusters"])
    assert res["nmi"] == normalized_mutual_info_score(labels, res["clusters"])


def _nested_blobs(sep: float = 1.0):
    """Two far-apart groups of three blobs each, ``sep`` apart within a group (at 1.0 they
    overlap: one connected neighbour graph per group)."""
    rng = np.random.default_rng(1)
    fine = np.repeat(np.arange(6), 40)
    centres = np.array([[0, 0], [sep, 0], [0, sep], [30, 30], [30 + sep, 30], [30, 30 + sep]])
    return centres[fine] + 0.4 * rng.normal(size=(240, 2)), fine


def test_cluster_agreement_optimal_resolution_is_the_best_nmi_of_the_grid():
    # Nested groups: 2 coarse groups of 3 fine groups each, labelled by the 6 fine groups.
    z, fine = _nested_blobs(sep=3.0)
    best = metrics.cluster_agreement(z, fine, resolution="optimal", n_neighbors=10, seed=3)
    grid = [
        metrics.cluster_agreement(z, fine, resolution=r, n_neighbors=10, seed=3)
        for r in metrics._labels.RESOLUTIONS
    ]
    top = max(range(len(grid)), key=lambda i: grid[i]["nmi"])  # first maximum, as in the sweep
    assert best["nmi"] == grid[top]["nmi"] == max(g["nmi"] for g in grid)
    assert best["resolution"] == metrics._labels.RESOLUTIONS[top]
    assert best["ari"] == grid[top]["ari"]
    np.testing.assert_array_equal(best["clusters"], grid[top]["clusters"])
    assert min(g["nmi"] for g in grid) < best["nmi"]  # the resolution matters here
    assert metrics.cluster_agreement(z, fine, resolution=np.float64(0.5))["resolution"] == 0.5
    for bad in ("best", 0.0, -1.0, float("nan"), (), [0.1, -1.0], ["a"]):
        with pytest.raises(ValueError, match="positive number, 'optimal' or a sequence"):
            metrics.cluster_agreement(z, fine, resolution=bad)
    # A grid given as a sequence (here a NumPy array of scIB's grid) is searched the same way.
    same = metrics.cluster_agreement(
        z, fine, resolution=np.array(metrics.RESOLUTIONS), n_neighbors=10, seed=3
    )
    assert (same["resolution"], same["nmi"], same["ari"]) == (
        best["resolution"],
        best["nmi"],
        best["ari"],
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"resolution": True}, ValueError, "positive number, 'optimal' or a sequence"),
        ({"resolution": [0.5, False]}, ValueError, "positive number, 'optimal' or a sequence"),
        ({"n_neighbors": 10.5}, TypeError, "n_neighbors must be an integer"),
        ({"n_neighbors": "10"}, TypeError, "n_neighbors must be an integer"),
        ({"n_neighbors": 10.0}, TypeError, "pass 10"),
        ({"n_neighbors": 1}, ValueError, "n_neighbors must be an integer >= 2"),
        ({"n_neighbors": 240}, ValueError, "between 2 and n_cells - 1 = 239"),
        ({"seed": None}, TypeError, "seed must be an integer"),
        ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
    ],
)
def test_cluster_agreement_refuses_bad_arguments_before_clustering(kwargs, error, match):
    z, fine = _nested_blobs()
    with pytest.raises(error, match=match):
        metrics.cluster_agreement(z, fine, **kwargs)


def test_cluster_agreement_takes_numpy_integers():
    z, fine = _nested_blobs(sep=3.0)
    a = metrics.cluster_agreement(
        z, fine, resolution=0.5, n_neighbors=np.int64(10), seed=np.int32(3)
    )
    b = metrics.cluster_agreement(z, fine, resolution=0.5, n_neighbors=10, seed=3)
    np.testing.assert_array_equal(a["clusters"], b["clusters"])


def test_cluster_agreement_warns_at_the_grid_edge_and_the_wide_grid_reaches_the_optimum():
    z, fine = _nested_blobs()
    coarse = fine // 3  # labelled by the two groups: scIB's smallest resolution still cuts them
    with pytest.warns(UserWarning, match="resolution 0.1 is the grid's smallest"):
        scib = metrics.cluster_agreement(z, coarse, resolution="optimal", n_neighbors=10, seed=3)
    assert scib["resolution"] == 0.1 and scib["n_clusters"] > 2 and scib["ari"] < 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plateau at 0.01 (same clusters at 0.02): no warning
        wide = metrics.cluster_agreement(
            z, coarse, resolution=metrics.RESOLUTIONS_WIDE, n_neighbors=10, seed=3
        )
    assert wide["n_clusters"] == 2 and wide["ari"] == pytest.approx(1.0)
    assert metrics.RESOLUTIONS_WIDE[-len(metrics.RESOLUTIONS) :] == metrics.RESOLUTIONS
    with pytest.warns(UserWarning, match="grid's largest"):  # the six blobs: 2 clusters, then 3
        metrics.cluster_agreement(z, fine, resolution=(0.05, 0.1), n_neighbors=10, seed=3)


# --- input errors ------------------------------------------------------------------------------


def test_input_errors():
    f = _factors(n=50, k=2)
    z = _perfect(f)
    with pytest.raises(ValueError, match="latents has 50 rows .* factors has 49"):
        metrics.mig(z, f[:49])
    with pytest.raises(ValueError, match="latents has 50 rows .* labels has 40"):
        metrics.latent_matching_score(z, f[:40, 0])
    bad = z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or infinite values \(dimensions \[1\]\)"):
        metrics.modularity(bad, f)
    with pytest.raises(ValueError, match=r"latents must be 2-D .* latents\[:, None\]"):
        metrics.sap(z[:, 0], f)
    with pytest.raises(ValueError, match="latents must be 2-D"):
        metrics.dci(z[None], f)
    with pytest.raises(ValueError, match="factors must be 1-D .* or 2-D"):
        metrics.mig(z, f[None])
    with pytest.raises(ValueError, match="non-integer values.*quantile_bins"):
        metrics.mig(z, f + 0.5)
    with pytest.raises(ValueError, match="1 missing values"):
        metrics.mig(z, pd.Categorical(["a", None] + ["b"] * 48))
    with pytest.raises(ValueError, match="test_size must be a fraction"):
        metrics.sap(z, f, test_size=1.5)
    with pytest.raises(ValueError, match="n_bins must be an integer >= 2"):
        metrics.mig(z, f, n_bins=0)
    # one bin made every mutual information 0: MIG, modularity and LMS-SMI returned 0.0
    # silently (LMS-SMI raised scikit-learn's KBinsDiscretizer error instead)
    for score in (metrics.mig, metrics.modularity):
        with pytest.raises(ValueError, match="n_bins must be an integer >= 2"):
            score(z, f, n_bins=1)
    with pytest.raises(ValueError, match="n_bins must be an integer >= 2"):
        metrics.latent_matching_score(z, f[:, 0], n_bins=np.int64(1))
    with pytest.raises(ValueError, match="n_bins must be an integer >= 2"):
        metrics.quantile_bins(z[:, 0], 1)
    with pytest.raises(ValueError, match="values must be 1-D"):
        metrics.quantile_bins(z, 4)


def test_cluster_agreement_leaves_torch_thread_count_alone():
    import torch

    from scvae_beta.metrics import cluster_agreement

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    z = rng.normal(size=(120, 3)) + 4 * labels[:, None]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cluster_agreement(z, labels, n_neighbors=10)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
