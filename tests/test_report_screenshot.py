"""``scripts/report_screenshot.py``: the documentation's report screenshot, regenerated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_script

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def shot_module():
    return load_script("report_screenshot")


@pytest.fixture
def page(tmp_path):
    html = tmp_path / "page.html"
    html.write_text(
        "<html><body style='margin:0'>"
        "<div style='background:#102030;height:200px'></div>"
        "<div style='background:#e04020;height:3000px'></div></body></html>"
    )
    return html


def test_missing_report_names_the_fix_and_writes_nothing(shot_module, tmp_path, capsys):
    out = tmp_path / "shot.png"
    assert shot_module.main([str(tmp_path / "absent.html"), "-o", str(out)]) == 1
    assert "make demo" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("width", [0, 99, 20_000, 640.0, True])
def test_window_size_must_be_whole_pixels_in_range(shot_module, page, tmp_path, width):
    with pytest.raises(ValueError, match="width"):
        shot_module.screenshot(page, tmp_path / "s.png", width=width, chromium="/bin/true")


def test_missing_browser_says_how_to_install_it(shot_module, page, tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        shot_module.screenshot(page, tmp_path / "s.png", chromium=tmp_path / "no-chromium")


def test_failed_browser_leaves_an_existing_screenshot_untouched(shot_module, page, tmp_path):
    out = tmp_path / "s.png"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="chromium failed"):
        shot_module.screenshot(page, out, chromium="/bin/false")
    assert out.read_bytes() == b"old"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)")
def test_screenshot_is_the_top_of_the_page_at_the_asked_size(shot_module, page, tmp_path):
    import matplotlib.image

    out = shot_module.screenshot(page, tmp_path / "docs" / "s.png", width=320, height=400)
    pixels = matplotlib.image.imread(out)[..., :3]
    assert pixels.shape[:2] == (400, 320)
    # the dark band on top, the red block below it: the top of the page, in order
    assert np.allclose(pixels[50, 160], np.array([0x10, 0x20, 0x30]) / 255, atol=0.02)
    assert np.allclose(pixels[300, 160], np.array([0xE0, 0x40, 0x20]) / 255, atol=0.02)
