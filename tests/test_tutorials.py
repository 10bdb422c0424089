"""Execute the tutorials in ``tutorials/`` in quick mode and check what they compute.

Each notebook reads ``SCVAE_BETA_TUTORIAL_QUICK=1`` (few cells, epochs, betas and seeds; one
thread) and then writes ``tutorial_0N_results.json`` into its working directory, which the checks
below read. The kernel is this interpreter (``sys.executable``), through a kernel spec written
into a temporary ``JUPYTER_PATH``, so no kernel needs registering and a user's own ``python3``
kernel spec cannot get in the way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = [
    "01_quickstart.ipynb",
    "02_fidelity_vs_discovery.ipynb",
    "03_beta_vae_vs_beta_tcvae.ipynb",
    "04_trajectories_paul15.ipynb",
]
#: Per-cell time limit (s) in quick mode; each whole notebook takes well under a minute.
CELL_TIMEOUT = 300
#: Committed notebooks stay small enough to diff and review.
MAX_NOTEBOOK_BYTES = 2_000_000


def execute(name: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Run ``tutorials/<name>`` in quick mode with ``workdir`` as its working directory."""
    spec_dir = workdir / "_jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (scvae_beta tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(workdir / "_jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(workdir / "_runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("SCVAE_BETA_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    # Inline figures even where the caller exports a non-interactive backend (e.g. CI's Agg).
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    return nb


def outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    """All outputs of ``kind`` (e.g. ``"image/png"``, ``"error"``) over the code cells."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == kind or kind in out.get("data", {}):
                found.append(out)
    return found


def results(workdir: Path, number: int) -> dict:
    path = workdir / f"tutorial_{number:02d}_results.json"
    assert path.is_file(), f"the notebook did not write {path.name} in quick mode"
    return json.loads(path.read_text())


# ---------------------------------------------------------------------- committed notebooks


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_shows_a_full_run(name):
    path = TUTORIALS / name
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # Executed top to bottom in one kernel, without errors, in full (not quick) mode.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not outputs(nb, "error")
    first = "".join(o.get("text", "") for o in code[0].outputs)
    assert "full run" in first and "quick mode" not in first
    assert len(outputs(nb, "image/png")) >= 3
    # The quick-mode switch is read at the top, before anything heavy runs.
    assert 'os.environ.get("SCVAE_BETA_TUTORIAL_QUICK") == "1"' in code[0].source
    assert "INTERPRETATION" not in "".join(c.source for c in nb.cells)


def test_readme_lists_every_tutorial():
    text = (TUTORIALS / "README.md").read_text()
    for name in NOTEBOOKS:
        assert name in text
    assert "SCVAE_BETA_TUTORIAL_QUICK" in text


# ---------------------------------------------------------------------- quick-mode runs


@pytest.mark.slow
def test_01_quickstart(tmp_path, monkeypatch):
    nb = execute("01_quickstart.ipynb", tmp_path, monkeypatch)
    res = results(tmp_path, 1)
    assert res["n_cells"] == 600 and res["n_latent"] == 10
    assert 1 <= len(res["active_dims"]) <= 10
    assert res["traversed_dims"] == res["active_dims"]
    assert -1.0 <= res["ari"] <= 1.0 and res["n_leiden"] >= 2
    # Markers absent from the 2,000 bundled genes are reported, the others all checked.
    assert res["markers_missing"] == ["CD8A", "IL7R", "CCR7", "FOXP3"]
    assert res["markers_checked"] == 10
    assert 0.0 <= res["marker_agreement"] <= 1.0
    # History, UMAP, KL bars, latent dims, traversals, marker heat map.
    assert len(outputs(nb, "image/png")) >= 6


@pytest.mark.slow
def test_02_fidelity_vs_discovery(tmp_path, monkeypatch):
    nb = execute("02_fidelity_vs_discovery.ipynb", tmp_path, monkeypatch)
    res = results(tmp_path, 2)
    table = res["table"]
    betas = sorted({row["beta"] for row in table})
    assert betas == res["betas"] and len(betas) >= 2
    assert len(table) == len(betas) * len(res["seeds"])
    for row in table:
        assert row["rate"] >= 0 and row["distortion"] > 0 and 0 <= row["n_active"] <= 10
    assert res["recommended_beta"] in betas
    # The refits at the smallest and the largest beta: fewer active dimensions at large beta.
    refits = res["refits"]
    assert set(refits) >= {f"{betas[0]:g}", f"{betas[-1]:g}"}
    assert refits[f"{betas[-1]:g}"]["n_active"] < refits[f"{betas[0]:g}"]["n_active"]
    assert len(outputs(nb, "image/png")) >= 3


@pytest.mark.slow
def test_03_beta_vae_vs_beta_tcvae(tmp_path, monkeypatch):
    nb = execute("03_beta_vae_vs_beta_tcvae.ipynb", tmp_path, monkeypatch)
    res = results(tmp_path, 3)
    assert set(res["factors"]) == {"cell_type", "differentiation", "interferon", "phase"}
    assert {row["model"] for row in res["scores"]} == {"beta_vae", "beta_tcvae"}
    for row in res["scores"]:
        assert 0.0 <= row["mig"] <= 1.0 and 0.0 <= row["mig_types_1hot"] <= 1.0
        assert 0.0 <= row["dci_disentanglement"] <= 1.0
        # Chen et al.'s decomposition: MI + TC + dimension-wise KL is the KL to the prior
        # (both sides estimated; observed within 2 % in quick and full runs).
        parts = row["mi"] + row["tc"] + row["dw_kl"]
        assert parts == pytest.approx(row["kl_total"], rel=0.1, abs=0.05)
    assert len(outputs(nb, "image/png")) >= 3


@pytest.mark.slow
def test_04_trajectories_paul15(tmp_path, monkeypatch):
    nb = execute("04_trajectories_paul15.ipynb", tmp_path, monkeypatch)
    res = results(tmp_path, 4)
    assert res["n_cells"] == 800 and res["root_celltype"] == "Multipotent progenitors"
    assert res["progenitor_dpt_lowest"]
    for lineage in ("1", "2"):
        assert res["dpt_vs_slingshot"][lineage] > 0.5
        assert res["best_dim_spearman"][lineage] > res["random_baseline_median"][lineage]
    assert len(outputs(nb, "image/png")) >= 4
