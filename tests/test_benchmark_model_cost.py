"""``benchmarks/model_cost.py``: the ratio paired by round (issue 10's decoder-cost aim)."""

from __future__ import annotations

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def model_cost():
    return load_benchmark("model_cost")


def test_paired_ratio_is_the_median_and_range_of_each_rounds_ratio(model_cost):
    # a run that takes exactly 2x the baseline, on a machine 1.5x slower in round 2: cancels
    base, run = [1.0, 1.5, 1.0], [2.0, 3.0, 2.0]
    assert model_cost.paired_ratios(run, base) == (2.0, 2.0, 2.0)
    # a slow stretch that hits the baseline in round 2 and the run in round 3: the range shows it
    base, run = [1.0, 1.5, 1.0], [2.0, 2.0, 3.0]
    paired = model_cost.paired_ratios(run, base)
    assert paired[0] == 2.0 and paired[1:] == (2.0 / 1.5, 3.0)


def test_paired_ratio_needs_one_time_per_round(model_cost):
    with pytest.raises(ValueError, match="one time per round"):
        model_cost.paired_ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="one time per round"):
        model_cost.paired_ratios([], [])


def test_decoder_entries_carry_width_and_output_layer(model_cost):
    spec = model_cost.decoder_spec
    assert spec("mlp") == ("mlp", None, "")
    assert spec("additive") == ("additive", None, "")
    assert spec("additive:8") == ("additive", 8, "")
    assert spec("additive:16@native") == ("additive", 16, "native")
    assert spec("additive_fast@torch") == ("additive_fast", None, "torch")
    for bad, match in (
        ("additive:0", "positive integer"),
        ("additive:x", "positive integer"),
        ("mlp:8", "takes no width"),
        ("additive@gpu", "@torch or @native"),
    ):
        with pytest.raises(SystemExit, match=match):
            spec(bad)
