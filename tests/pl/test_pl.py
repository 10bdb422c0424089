"""Plots: each returns its Axes, draws what it should, opens no extra figure, names fixes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

import scvae_beta  # noqa: E402
from scvae_beta import pl, tl  # noqa: E402
from tests.conftest import FAST, simulate_counts  # noqa: E402

KEY = "scvae_beta"
KL = np.array([0.5, 0.01, 1.2, 0.0, 0.3])


@pytest.fixture(autouse=True)
def close_figures():
    plt.close("all")
    yield
    plt.close("all")


def n_figures() -> int:
    return len(plt.get_fignums())


def hand_made(n_cells: int = 50, n_epochs: int = 6, seed: int = 0) -> ad.AnnData:
    """An AnnData with the fields fit writes, built by hand (no training)."""
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(np.zeros((n_cells, 3), dtype=np.float32))
    adata.obsm["X_" + KEY] = rng.normal(size=(n_cells, KL.size)).astype(np.float32)
    adata.obsm["X_umap"] = rng.normal(size=(n_cells, 2)).astype(np.float32)
    epochs = np.arange(1, n_epochs + 1)
    history = pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": 100.0 / epochs,
            "train_reconstruction": 90.0 / epochs,
            "train_kl": 5.0 + epochs,
            "val_loss": 110.0 / epochs,
            "val_reconstruction": 95.0 / epochs,
            "val_kl": 5.5 + epochs,
            "kl_weight": np.minimum(epochs / 3.0, 1.0),
            "seconds": 0.1 * epochs,
        }
    )
    for d in range(KL.size):
        history[f"kl_dim_{d}"] = KL[d] * epochs / n_epochs
    adata.uns[KEY] = {
        "params": {"active_threshold": 0.05, "n_latent": KL.size},
        "kl_per_dim": KL.copy(),
        "active_dims": np.flatnonzero(KL > 0.05),
        "history": history,
        "training": {"best_epoch": 4},
    }
    return adata


@pytest.fixture(scope="module")
def traversed():
    adata = simulate_counts(n_cells=120, n_genes=30)
    model = scvae_beta.fit(adata, n_latent=3, **FAST)
    tl.latent_traversal(adata, model, dims=[0, 2], n_steps=7, n_cells=60, n_top_genes=5)
    return adata


# ---------------------------------------------------------------------- kl_per_dim


def test_kl_per_dim_bars_threshold_and_colours():
    adata = hand_made()
    ax = pl.kl_per_dim(adata)
    assert isinstance(ax, Axes) and n_figures() == 1
    assert len(ax.patches) == KL.size
    np.testing.assert_allclose([p.get_height() for p in ax.patches], KL)
    active, grey = to_rgba("C0"), to_rgba("0.75")
    assert [p.get_facecolor() == active for p in ax.patches] == list(KL > 0.05)
    assert [p.get_facecolor() == grey for p in ax.patches] == list(KL <= 0.05)
    assert any(np.allclose(line.get_ydata(), 0.05) for line in ax.lines)
    assert ax.get_title() == "3 of 5 dimensions active"

    fig, own = plt.subplots()
    out = pl.kl_per_dim(adata, threshold=0.4, log=True, ax=own)
    assert out is own and n_figures() == 2 and own.get_yscale() == "log"
    assert [p.get_facecolor() == active for p in own.patches] == list(KL > 0.4)
    assert any(np.allclose(line.get_ydata(), 0.4) for line in own.lines)


def test_kl_per_dim_missing_key():
    with pytest.raises(KeyError, match="key_added='other'"):
        pl.kl_per_dim(hand_made(), key="other")
    assert n_figures() == 0


# ---------------------------------------------------------------------- training_history


def test_training_history_panels():
    adata = hand_made()
    history = adata.uns[KEY]["history"]
    axes = pl.training_history(adata)
    assert len(axes) == 3 and all(isinstance(a, Axes) for a in axes) and n_figures() == 1
    rec, kl, dims = axes
    train_rec = [ln for ln in rec.lines if ln.get_label() == "train"][0]
    np.testing.assert_allclose(train_rec.get_ydata(), history["train_reconstruction"])
    assert {ln.get_label() for ln in kl.lines} >= {"train", "val"}
    twin = [a for a in kl.figure.axes if a is not kl and a.bbox.bounds == kl.bbox.bounds][0]
    np.testing.assert_allclose(twin.lines[0].get_ydata(), history["kl_weight"])
    image = dims.images[0].get_array()
    assert image.shape == (KL.size, len(history))
    np.testing.assert_allclose(image[:, -1], KL)  # last epoch's column: the final KL per dim
    assert any(np.allclose(ln.get_xdata(), 4) for ln in dims.lines)  # best epoch marked


def test_training_history_given_axes_and_errors():
    adata = hand_made()
    fig, given = plt.subplots(1, 3)
    out = pl.training_history(adata, axes=given)
    assert all(a is b for a, b in zip(out, given, strict=True)) and n_figures() == 1
    with pytest.raises(ValueError, match="pass at least 3"):
        pl.training_history(adata, axes=given[:2])
    del adata.uns[KEY]["history"]
    with pytest.raises(KeyError, match="history"):
        pl.training_history(adata)
    assert n_figures() == 1


def test_training_history_of_a_real_fit(traversed):
    axes = pl.training_history(traversed)
    n_epochs = len(traversed.uns[KEY]["history"])
    assert axes[2].images[0].get_array().shape == (3, n_epochs)


# ---------------------------------------------------------------------- latent_dims


def test_latent_dims_one_panel_per_active_dim():
    adata = hand_made()
    axes = pl.latent_dims(adata, ncols=2)
    assert [a.get_title() for a in axes] == ["dim 0", "dim 2", "dim 4"] and n_figures() == 1
    z = adata.obsm["X_" + KEY]
    for ax, d in zip(axes, (0, 2, 4), strict=True):
        colours = np.asarray(ax.collections[0].get_array())
        np.testing.assert_allclose(np.sort(colours), np.sort(z[:, d]), rtol=1e-6)
        vmin, vmax = ax.collections[0].get_clim()
        assert vmin == pytest.approx(-vmax) and vmax == pytest.approx(np.abs(z[:, d]).max())
    hidden = [a for a in axes[0].figure.axes if not a.get_visible()]
    assert len(hidden) == 1  # a 2 x 2 grid for 3 panels


def test_latent_dims_given_axes_dims_and_errors():
    adata = hand_made()
    fig, given = plt.subplots(1, 2)
    out = pl.latent_dims(adata, dims=[1, 3], axes=given)
    assert [a.get_title() for a in out] == ["dim 1", "dim 3"] and out[0] is given[0]
    assert n_figures() == 1
    with pytest.raises(KeyError, match=r"sc\.tl\.umap"):
        pl.latent_dims(adata, basis="tsne")
    with pytest.raises(ValueError, match="out of range"):
        pl.latent_dims(adata, dims=[7])
    with pytest.raises(KeyError, match="key_added='x'"):
        pl.latent_dims(adata, key="x")
    assert n_figures() == 1


# ---------------------------------------------------------------------- traversal


def test_traversal_heat_map(traversed, tmp_path):
    info = traversed.uns[KEY]["traversal"]
    ax = pl.traversal(traversed, dim=2, n_genes=6)
    assert isinstance(ax, Axes) and n_figures() == 1
    values = ax.images[0].get_array()
    assert values.shape == (6, 7)
    np.testing.assert_allclose(values.sum(1), 0.0, atol=1e-9)  # row-centred
    genes = [t.get_text() for t in ax.get_yticklabels()]
    profiles = dict(zip(info["genes"]["dim_2"], info["profiles"]["dim_2"], strict=True))
    lfc = np.array([np.log(profiles[g][-1] / profiles[g][0]) for g in genes])
    assert (np.diff(lfc) <= 1e-12).all()  # most up first, most down last
    everything = np.array([np.log(p[-1] / p[0]) for p in profiles.values()])
    assert np.sort(np.abs(lfc))[0] >= np.sort(np.abs(everything))[-6] - 1e-12
    # The same after an h5ad round trip, into a given Axes.
    traversed.write_h5ad(tmp_path / "a.h5ad")
    fig, own = plt.subplots()
    out = pl.traversal(ad.read_h5ad(tmp_path / "a.h5ad"), dim=2, n_genes=6, ax=own)
    assert out is own and n_figures() == 2
    np.testing.assert_allclose(own.images[0].get_array(), values, rtol=1e-6)


def test_traversal_errors(traversed):
    with pytest.raises(KeyError, match=r"dims=\[1\]"):
        pl.traversal(traversed, dim=1)
    plain = hand_made()
    with pytest.raises(KeyError, match=r"tl\.latent_traversal"):
        pl.traversal(plain, dim=0)
    assert n_figures() == 0


# ---------------------------------------------------------------------- rate_distortion


def sweep(betas=(0.5, 1.0, 2.0, 4.0), seeds=(0, 1, 2)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for b in betas:
        for s in seeds:
            rows.append(
                {
                    "beta": b,
                    "seed": s,
                    "rate": 20.0 / (1.0 + b) + rng.normal(0, 0.3),
                    "distortion": 100.0 + 3.0 * b + rng.normal(0, 0.3),
                    "n_active": 5,
                    "mi": 1.0,
                    "tc": 0.5,
                    "dw_kl": 3.0,
                    "mig": 0.1 * b + 0.05 * s,
                    "dci_disentanglement": 0.3,
                    "train_seconds": 1.0,
                }
            )
    return pd.DataFrame(rows)


def test_rate_distortion_panels():
    table = sweep()
    table.attrs["recommended_beta"] = 2.0
    ax_rd, ax_m = pl.rate_distortion(table)
    assert n_figures() == 1
    means = table.groupby("beta")[["rate", "distortion", "mig"]].mean()
    curve = [ln for ln in ax_rd.lines if len(ln.get_xdata()) == 4][0]
    np.testing.assert_allclose(curve.get_xdata(), means["rate"])
    np.testing.assert_allclose(curve.get_ydata(), means["distortion"])
    assert sum(len(c.get_offsets()) for c in ax_rd.collections[:4]) == len(table)
    assert sorted(t.get_text() for t in ax_rd.texts) == ["β=0.5", "β=1", "β=2", "β=4"]
    assert ax_m.get_xscale() == "log"
    line = [ln for ln in ax_m.lines if len(ln.get_xdata()) == 4][0]
    np.testing.assert_allclose(line.get_ydata(), means["mig"])
    np.testing.assert_allclose(np.ptp(ax_m.collections[0].get_segments()[0][:, 1]), 2 * 0.05)
    assert "recommended β=2" in [t.get_text() for t in ax_m.get_legend().get_texts()]
    assert any(np.allclose(ln.get_xdata(), 2.0) for ln in ax_m.lines)
    assert "recommended β=2" in [t.get_text() for t in ax_rd.get_legend().get_texts()]


def test_rate_distortion_from_adata_column_and_zero_beta():
    table = sweep(betas=(0.0, 1.0, 8.0))
    table["recommended"] = table["beta"] == 8.0
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    adata.uns["scvae_beta_tune"] = {"table": table}
    fig, given = plt.subplots(1, 2)
    ax_rd, ax_m = pl.rate_distortion(adata, metric="dci_disentanglement", axes=given)
    assert ax_rd is given[0] and n_figures() == 1
    assert ax_m.get_xscale() == "symlog"
    assert "recommended β=8" in [t.get_text() for t in ax_m.get_legend().get_texts()]
    # Without anything recommended there is no legend.
    _, ax_m = pl.rate_distortion(sweep())
    assert ax_m.get_legend() is None


def test_rate_distortion_errors():
    with pytest.raises(KeyError, match="dci_disentanglement"):
        pl.rate_distortion(sweep(), metric="sap")
    with pytest.raises(KeyError, match="scvae_beta_tune"):
        pl.rate_distortion(ad.AnnData(np.zeros((2, 2), dtype=np.float32)))
    with pytest.raises(KeyError, match="distortion"):
        pl.rate_distortion(sweep().drop(columns=["distortion"]))
    assert n_figures() == 0
