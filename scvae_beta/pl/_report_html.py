"""HTML pieces of :func:`scvae_beta.pl.report`: embedded figures, tables, the page itself."""

from __future__ import annotations

import base64
import datetime
import html
import io

import numpy as np
import pandas as pd
from anndata import AnnData

#: Resolution of the embedded figures.
DPI = 80


def figure(size, nrows, ncols):
    """A pyplot-free Figure (no GUI backend, no global state) and its grid of Axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def img(fig, fig_id: str, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img id="{fig_id}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def caption(text: str) -> str:
    return f'<p class="caption">{text}</p>'


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def value(v) -> str:
    if isinstance(v, float | np.floating):
        return f"{float(v):.4g}"
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, list | tuple) and len(v) > 12:
        return f"{list(v[:12])} … ({len(v)} items)"
    return str(v)


def kv(d: dict) -> str:
    items = "".join(
        f"<div><span class='k'>{html.escape(str(k))}</span> "
        f"<span class='v'>{html.escape(value(v))}</span></div>"
        for k, v in d.items()
    )
    return f"<div class='kv'>{items}</div>"


def table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="data", float_format=lambda x: f"{x:.4g}")


def genes_text(genes, lfc) -> str:
    return ", ".join(f"{g} ({v:+.2g})" for g, v in zip(genes, np.asarray(lfc), strict=True))


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#23395d;color:#fff;padding:1em 2em}header h1{margin:0 0 .2em;font-size:1.5em}
nav{padding:.5em 2em;background:#e8ecf3;font-size:.9em}nav a{margin-right:1em;color:#23395d}
main{max-width:1200px;margin:0 auto;padding:0 2em 3em}
section{background:#fff;border:1px solid #ddd;border-radius:6px;margin:1.2em 0;padding:.4em 1.2em}
h2{color:#23395d;font-size:1.2em}h3{font-size:1em;margin:.8em 0 .3em}
img{max-width:100%;height:auto;display:block;margin:.4em 0}
.caption{font-size:.9em;color:#444}.note{color:#8a5a00;background:#fff6e0;padding:.5em .8em}
.kv{columns:3 18em;font-size:.85em}.kv div{break-inside:avoid;padding:1px 0}
.kv .k{color:#666}.kv .v{font-family:ui-monospace,monospace}
table.data{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.data th,table.data td{border-bottom:1px solid #e3e3e3;padding:3px 8px;text-align:left;
vertical-align:top}table.data th{background:#f0f2f6}
"""


def page(adata: AnnData, key: str, entry: dict, body: dict, sections: dict) -> str:
    """The whole document: header, a navigation bar and one ``<section>`` per entry of ``body``."""
    params = entry.get("params", {})
    model = params.get("model", "?")
    beta = params.get("beta", "?")
    version = entry.get("versions", {}).get("scvae_beta", "?")
    title = f"scvae_beta report: {model}, β = {beta}, key {key!r}"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = "".join(f'<a href="#{s}">{html.escape(t)}</a>' for s, t in sections.items())
    sections = "".join(
        f'<section id="{s}"><h2>{html.escape(sections[s])}</h2>{body[s]}</section>'
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
        f"<div>{adata.n_obs:,} cells × {adata.n_vars:,} genes · fitted with scvae_beta "
        f"{html.escape(str(version))} · report written {when}</div></header>"
        f"<nav>{nav}</nav><main>{sections}</main></body></html>\n"
    )
