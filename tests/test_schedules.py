"""KL schedules: exact values, and the adaptive controller's update rule."""

import math

import pytest

from trl_plus.errors import RecipeError


def build(plugin_manager, spec):
    return plugin_manager.components().kl_schedule(spec)


def test_constant(plugin_manager):
    s = build(plugin_manager, {"name": "constant", "value": 0.2})
    assert [s(step, {}) for step in (0, 5, 1000)] == [0.2, 0.2, 0.2]
    with pytest.raises(RecipeError, match="value must be > 0"):
        build(plugin_manager, {"name": "constant", "value": 0})


def test_linear_warmup_and_decay(plugin_manager):
    up = build(plugin_manager, {"name": "linear", "start": 0.1, "end": 0.5, "steps": 4})
    assert [up(step, {}) for step in (0, 1, 2, 4, 10)] == pytest.approx([0.1, 0.2, 0.3, 0.5, 0.5])
    down = build(plugin_manager, {"name": "linear", "start": 1.0, "end": 0.2, "steps": 8})
    assert down(2, {}) == pytest.approx(0.8)


def test_cosine(plugin_manager):
    s = build(plugin_manager, {"name": "cosine", "start": 1.0, "end": 0.2, "steps": 10})
    assert s(0, {}) == pytest.approx(1.0)
    assert s(5, {}) == pytest.approx(0.6)
    assert s(10, {}) == pytest.approx(0.2)
    assert s(2, {}) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert s(20, {}) == pytest.approx(0.2)


def test_adaptive_exact_update_rule(plugin_manager):
    s = build(plugin_manager, {"name": "adaptive", "init": 0.1, "target": 2.0, "horizon": 10})
    assert s(0, {}) == 0.1  # nothing measured yet
    # KL 3 vs target 2: error 0.5, clipped to 0.2; 1 step: value * (1 + 0.2 * 1/10)
    assert s(1, {"kl": 3.0}) == pytest.approx(0.1 * 1.02)
    # KL 2.2: error 0.1; 2 steps since the last call
    assert s(3, {"kl": 2.2}) == pytest.approx(0.1 * 1.02 * (1 + 0.1 * 2 / 10))
    # KL 1: error -0.5 clipped to -0.2
    v = 0.1 * 1.02 * 1.02 * (1 - 0.2 / 10)
    assert s(4, {"kl": 1.0}) == pytest.approx(v)
    # same step again: no second update
    assert s(4, {"kl": 100.0}) == pytest.approx(v)


def test_adaptive_raises_above_target_lowers_below(plugin_manager):
    s = build(plugin_manager, {"name": "adaptive", "init": 0.05, "target": 1.0, "horizon": 100})
    values = [s(step, {"kl": 5.0}) for step in range(10)]
    assert all(b > a for a, b in zip(values[1:], values[2:]))
    peak = values[-1]
    values = [s(step, {"kl": 0.1}) for step in range(10, 20)]
    assert all(b < a for a, b in zip(values, values[1:])) and values[-1] < peak


def test_adaptive_counts_samples_not_steps(plugin_manager):
    """horizon 10000 with 512-sample rollouts of 4 optimizer steps each: each rollout moves the
    coefficient by error * 512 / 10000, not error * 4 / 10000."""
    s = build(plugin_manager, {"name": "adaptive", "init": 0.1, "target": 2.0, "horizon": 10000})
    assert s(0, {"samples": 0}) == 0.1
    value = 0.1
    for rollout, kl in enumerate([3.0, 2.2, 1.0], start=1):
        got = s(4 * rollout, {"kl": kl, "samples": 512 * rollout})
        error = min(max(kl / 2.0 - 1, -0.2), 0.2)
        value *= 1 + error * 512 / 10000
        assert got == pytest.approx(value, rel=1e-12)
        if rollout == 1:  # error +0.2: +1.02% in one rollout (counting the 4 steps would give +0.008%)
            assert got / 0.1 == pytest.approx(1.01024)
    # the same cumulative count again (an eval rollout, say): no second update
    assert s(13, {"kl": 100.0, "samples": 512 * 3}) == pytest.approx(value)


def test_linear_may_reach_zero_for_ppo_only(plugin_manager):
    from trl_plus.errors import ComponentError

    s = build(plugin_manager, {"name": "linear", "start": 0.1, "end": 0.0, "steps": 2})
    with pytest.raises(ComponentError, match="returned 0.0 at step 2; it must be finite and > 0"):
        s(2, {})  # DPO's beta (the default check)
    s.allow_zero = True  # what PPOTrainer sets: kl_coef 0 is no KL penalty
    assert s(2, {}) == 0.0
    with pytest.raises(RecipeError, match="not both 0"):
        build(plugin_manager, {"name": "linear", "start": 0, "end": 0, "steps": 2})
