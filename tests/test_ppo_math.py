"""PPO arithmetic against hand-computed numbers (no models)."""

import math

import pytest
import torch

from trl_plus.trainers import ppo_math


def test_gae_matches_hand_computed_example_with_padding():
    gamma, lam = 0.9, 0.8
    # Row 0: three tokens then padding (garbage values there must not leak in).
    # Row 1: two tokens then padding.
    rewards = torch.tensor([[0.1, -0.2, 1.0, 9.0], [0.0, 1.0, 5.0, 5.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 7.0], [0.2, 0.6, 3.0, 3.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    adv, ret = ppo_math.gae(rewards, values, mask, gamma, lam)
    # Row 0 by hand: delta_2 = 1.0 - 0.3 = 0.7; delta_1 = -0.2 + 0.9*0.3 - 0.4 = -0.33;
    # delta_0 = 0.1 + 0.9*0.4 - 0.5 = -0.04; A_1 = -0.33 + 0.72*0.7; A_0 = -0.04 + 0.72*A_1.
    a1 = -0.33 + 0.72 * 0.7
    a0 = -0.04 + 0.72 * a1
    # Row 1: A_1 = 1 - 0.6 = 0.4; A_0 = 0 + 0.9*0.6 - 0.2 + 0.72*0.4.
    b1 = 0.4
    b0 = 0.9 * 0.6 - 0.2 + 0.72 * 0.4
    expected_adv = torch.tensor([[a0, a1, 0.7, 0.0], [b0, b1, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected_adv)
    expected_ret = torch.tensor([[a0 + 0.5, a1 + 0.4, 1.0, 0.0], [b0 + 0.2, b1 + 0.6, 0.0, 0.0]])
    torch.testing.assert_close(ret, expected_ret)


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.5, 0.9]])
    mask = torch.ones(1, 3)
    adv, ret = ppo_math.gae(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(ret, torch.tensor([[1.0, 1.0, 1.0]]))
    torch.testing.assert_close(adv, torch.tensor([[0.8, 0.5, 0.1]]))


def test_clipped_policy_loss_by_hand():
    log_ratio = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7, 10.0]]))
    old = torch.zeros(1, 5)
    new = (old + log_ratio).requires_grad_(True)
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.float32)  # the last token is padding
    loss, clipfrac, approx_kl = ppo_math.clipped_policy_loss(new, old, advantages, mask, 0.2)
    # Per token: max(-A r, -A clip(r, 0.8, 1.2)) = -1.2 (clipped), -0.5, 1.1, 0.8 (clipped).
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1 + 0.8) / 4)
    assert clipfrac.item() == pytest.approx(0.5)
    lr = log_ratio[0, :4]
    assert approx_kl.item() == pytest.approx(0.5 * (lr**2).mean().item())
    loss.backward()
    # Clipped tokens and padding get no gradient; the others get -A r / n_tokens.
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, -0.5 / 4, 1.1 / 4, 0.0, 0.0]]))


def test_clipped_policy_loss_asymmetric_range():
    new = torch.log(torch.tensor([[1.25]]))
    loss, clipfrac, _ = ppo_math.clipped_policy_loss(new, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.2, 0.28)
    assert loss.item() == pytest.approx(-1.25)  # inside 1 + 0.28: not clipped
    assert clipfrac.item() == 0.0


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.6, 0.0, 4.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 0.5, 0.0]])
    returns = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.float32)
    loss, clipfrac = ppo_math.clipped_value_loss(values, old, returns, mask, 0.2)
    # max((v-R)^2, (v_clip-R)^2): 0.09 (v clipped to 0.7), 0.36, 1.0 (unclipped is worse).
    assert loss.item() == pytest.approx(0.5 * (0.09 + 0.36 + 1.0) / 3)
    assert clipfrac.item() == pytest.approx(1 / 3)
    loss.backward()
    # The clipped token passes no gradient to v; padding none either.
    assert values.grad[0, 0].item() == 0.0 and values.grad[0, 3].item() == 0.0
    assert values.grad[0, 1].item() == pytest.approx(0.6 / 3)
    unclipped, _ = ppo_math.clipped_value_loss(values, old, returns, mask, None)
    assert unclipped.item() == pytest.approx(0.5 * (0.0 + 0.36 + 1.0) / 3)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_in_reward_sums_to_score_minus_penalty(estimator):
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 5, generator=g) * 3
    ref = -torch.rand(3, 5, generator=g) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float32)
    scores = torch.tensor([0.7, -1.0, 2.5])
    kl_coef = 0.3
    kl = ppo_math.kl_per_token(logp, ref, estimator) * mask
    rewards = ppo_math.per_token_rewards(scores, kl, mask, kl_coef)
    torch.testing.assert_close(rewards.sum(1), scores - kl_coef * kl.sum(1))
    # The score sits on the last real token; padding gets nothing.
    assert torch.all(rewards[mask == 0] == 0)
    assert rewards[1, 1].item() == pytest.approx(-1.0 - kl_coef * kl[1, 1].item())
    if estimator == "k3":
        assert torch.all(kl >= 0)
    else:
        torch.testing.assert_close(kl, (logp - ref) * mask)


def test_k3_estimator_formula():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])
    r = math.exp(-2.0 - -1.0)
    assert ppo_math.kl_per_token(logp, ref, "k3").item() == pytest.approx((r - 1) - math.log(r))
    with pytest.raises(ValueError, match="k2"):
        ppo_math.kl_per_token(logp, ref, "k2")


def test_k3_is_clamped_so_one_token_cannot_dominate():
    # The policy made a sampled token e^-8 times as likely as the reference does: k3 = e^8 - 9 ~ 2972.
    logp, ref = torch.tensor([-10.0, -1.0]), torch.tensor([-2.0, -1.5])
    kl = ppo_math.kl_per_token(logp, ref, "k3")
    assert kl[0].item() == ppo_math.K3_MAX == 10.0
    r = math.exp(-1.5 - -1.0)
    assert kl[1].item() == pytest.approx((r - 1) - math.log(r))  # small values untouched
    assert ppo_math.kl_per_token(logp, ref, "k1")[0].item() == -8.0  # k1 is not clamped


def test_masked_whiten_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.float32)
    out = ppo_math.masked_whiten(x, mask)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-4, rtol=1e-4)
    kept = ppo_math.masked_whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(kept[0, :3], torch.tensor([1.0, 2.0, 3.0]), atol=1e-4, rtol=1e-4)


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.float32)
    assert ppo_math.explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert ppo_math.explained_variance(torch.full_like(returns, 2.0), returns, mask) == pytest.approx(0.0, abs=1e-5)
