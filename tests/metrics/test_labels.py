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
