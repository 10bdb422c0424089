"""KL schedules: values, settling before the end of training, clamping."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from scvae_beta.annealing import constant, cyclical, linear, make_schedule, sigmoid
from scvae_beta.settings import Settings


def test_linear_values():
    assert linear(0, beta=4.0, warmup_steps=100) == 0.0
    assert linear(25, beta=4.0, warmup_steps=100) == pytest.approx(1.0)
    assert linear(100, beta=4.0, warmup_steps=100) == 4.0
    assert linear(10_000, beta=4.0, warmup_steps=100) == 4.0


def test_sigmoid_endpoints_midpoint_and_monotone():
    w = [sigmoid(s, beta=2.0, warmup_steps=50) for s in range(60)]
    assert w[0] == pytest.approx(0.0, abs=1e-12)
    assert w[25] == pytest.approx(1.0)  # symmetric about the middle
    assert w[50] == 2.0 and w[59] == 2.0
    assert all(b >= a for a, b in itertools.pairwise(w))


def test_cyclical_shape():
    # 4 cycles of 100 steps, ramp over the first half of each
    w = np.array(
        [cyclical(s, beta=1.0, total_steps=400, n_cycles=4, ratio=0.5) for s in range(400)]
    )
    starts = [0, 100, 200, 300]
    assert all(w[s] == 0.0 for s in starts)
    assert w[25] == pytest.approx(0.5)
    assert np.all(w[50:100] == 1.0) and np.all(w[350:] == 1.0)
    assert (np.diff(w) < 0).sum() == 3  # three drops back to zero
    assert cyclical(10_000, beta=1.0, total_steps=400) == 1.0


def test_constant():
    assert constant(0, beta=3.0) == 3.0


@pytest.mark.parametrize("name", ["linear", "sigmoid", "cyclical", "constant"])
@pytest.mark.parametrize(
    ("total", "spe", "warmup"),
    [(10, 1, 0.5), (1000, 10, 0.25), (1000, 10, 5000), (7, 7, 0.9), (5000, 250, 0.99), (3, 1, 2)],
)
def test_every_schedule_settles_at_beta_before_the_end(name, total, spe, warmup):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        s = make_schedule(name, beta=3.0, total_steps=total, steps_per_epoch=spe, warmup=warmup)
    assert s.settle_step < total
    assert all(s(t) == 3.0 for t in range(s.settle_step, total))
    # at least the last epoch and the last 10 % run at full beta (unless training is 1 epoch)
    if total > spe:
        assert total - s.settle_step >= min(total, max(spe, int(np.ceil(0.1 * total))))
    if s.settle_step > 0:
        assert s(s.settle_step - 1) < 3.0


def test_warmup_in_steps_and_fraction():
    s_steps = make_schedule("linear", beta=1.0, total_steps=1000, steps_per_epoch=10, warmup=200)
    s_frac = make_schedule("linear", beta=1.0, total_steps=1000, steps_per_epoch=10, warmup=0.2)
    assert s_steps.settle_step == s_frac.settle_step == 200
    assert s_steps(100) == s_frac(100) == pytest.approx(0.5)


def test_warmup_longer_than_training_is_shortened_with_a_warning():
    # scvi-tools issue #1569: a fixed warm-up that outlasts training silently keeps beta low.
    with pytest.warns(UserWarning, match="would not finish"):
        s = make_schedule("linear", beta=5.0, total_steps=1000, steps_per_epoch=10, warmup=4000)
    assert s.settle_step == 900
    assert s(999) == 5.0


def test_warmup_over_the_whole_budget_settles_before_the_last_tenth():
    """``kl_warmup=1.0`` (DRVI's and scVI's "warm up over all epochs") is accepted by the
    settings and shortened, with the usual warning, so the weight still reaches beta."""
    assert Settings(kl_warmup=1.0).kl_warmup == 1.0
    for bad in (1.01, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"as a fraction must be in \[0, 1\]"):
            Settings(kl_warmup=bad)
    with pytest.warns(UserWarning, match="shortened to 900"):
        s = make_schedule("linear", beta=2.0, total_steps=1000, steps_per_epoch=10, warmup=1.0)
    assert s.settle_step == 900 and s(899) < 2.0 and s(900) == 2.0


def test_unknown_schedule():
    with pytest.raises(ValueError, match="choose"):
        make_schedule("cosine", beta=1.0, total_steps=10, steps_per_epoch=1)


def test_default_fraction_on_short_training_is_shortened_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = make_schedule("linear", beta=2.0, total_steps=6, steps_per_epoch=3, warmup=0.25)
    assert s.settle_step <= 3 and s(5) == 2.0


def test_fraction_that_ignores_the_final_tenth_warns():
    with pytest.warns(UserWarning, match="shortened to 900"):
        make_schedule("sigmoid", beta=1.0, total_steps=1000, steps_per_epoch=10, warmup=0.95)
