"""Regenerate the report screenshot of the documentation (``docs/_static/report.png``).

Run by a developer after ``make demo`` whenever the demo's configuration changes:

    make demo
    .venv/bin/python scripts/report_screenshot.py demo_output/pbmc_sorted_scvae_beta_report.html

It opens the report in headless Chromium (``/usr/bin/chromium``; ``apt-get install chromium``)
with a window of ``--width`` x ``--height`` CSS pixels and writes the visible part, the top of
the report, as a PNG (default: ``docs/_static/report.png``, 640 x 1500).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "_static" / "report.png"
CHROMIUM = Path("/usr/bin/chromium")


def screenshot(
    html: str | Path,
    out: str | Path = DEFAULT_OUT,
    *,
    width: int = 640,
    height: int = 1500,
    chromium: str | Path = CHROMIUM,
) -> Path:
    """Write a ``width`` x ``height`` PNG of the top of ``html`` to ``out`` and return its path.

    The PNG is first written into a temporary folder and moved into place only when Chromium
    succeeded, so a failed run leaves an existing screenshot as it was.
    """
    html, out, chromium = Path(html), Path(out), Path(chromium)
    if not html.is_file():
        raise FileNotFoundError(f"{html} does not exist: run `make demo` first (or pass a report)")
    if not chromium.exists():
        raise FileNotFoundError(f"{chromium} not found: apt-get install chromium")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 10_000:
            raise ValueError(
                f"{name} must be an integer number of pixels in 100..10000, got {value!r}"
            )
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        cmd = [
            str(chromium),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            html.resolve().as_uri(),
        ]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp)
        if run.returncode != 0 or not shot.exists():
            raise RuntimeError(f"chromium failed ({run.returncode}): {run.stderr.strip()[-500:]}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(shot), out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "html", help="the report, e.g. demo_output/pbmc_sorted_scvae_beta_report.html"
    )
    parser.add_argument("-o", "--out", default=str(DEFAULT_OUT), help="PNG to write")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args(argv)
    try:
        path = screenshot(args.html, args.out, width=args.width, height=args.height)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"report_screenshot: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
