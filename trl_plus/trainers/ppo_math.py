"""The arithmetic of PPO for language models, on plain tensors.

Shapes: ``[B, T]`` per-token tensors over the completion tokens of a batch, with a
``mask`` that is 1 on the tokens that count (the completion up to and including EOS) and
0 on padding. Nothing here knows about models or trainers, so each piece is tested
against hand-computed numbers.

References: Schulman et al. 2017 (clipped surrogate); Schulman et al. 2016 (GAE);
Ziegler et al. 2019 (KL penalty in the reward); Huang et al. 2024, "The N Implementation
Details of RLHF with PPO" (per-token rewards, whitening, clipped value loss).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# A reduction across processes: takes a tensor of local sums, returns the global sums.
Reduce = Callable[[torch.Tensor], torch.Tensor]


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean over the unmasked entries; 0 (with a graph) when nothing is unmasked."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_moments(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) variance over the unmasked entries, optionally over all processes."""
    mask = mask.to(x.dtype)
    stats = torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()])
    if reduce is not None:
        stats = reduce(stats)
    total, total_sq, count = stats[0], stats[1], stats[2].clamp(min=1)
    mean = total / count
    var = (total_sq / count - mean * mean).clamp(min=0)
    if stats[2] > 1:
        var = var * stats[2] / (stats[2] - 1)
    return mean, var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, reduce: Reduce | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """Scale to unit variance (and zero mean if ``shift_mean``) over the unmasked entries; masked entries become 0."""
    mean, var = masked_moments(x, mask, reduce)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


# k3 grows like exp(log p_ref - log p): one token the policy has made unlikely can dominate the
# batch's reward whitening; each token's k3 is clamped to this (k1 is a log-ratio, never clamped).
K3_MAX = 10.0


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of the sampled tokens.

    ``k1`` is the log-ratio (unbiased, can be negative per token); ``k3`` is
    ``(r - 1) - log r`` with ``r = p_ref / p`` (unbiased, always >= 0, lower variance),
    clamped to at most ``K3_MAX`` per token.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return (torch.expm1(-log_ratio) + log_ratio).clamp(max=K3_MAX)
    raise ValueError(f"unknown KL estimator {estimator!r}; choose 'k1' or 'k3'")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last unmasked token of each row (-1 for an all-masked row)."""
    positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """``-kl_coef * kl_t`` on every completion token, plus the sequence score on its last token.

    A row's rewards therefore sum to ``score - kl_coef * sum_t kl_t``. Rows with no
    unmasked token get all zeros.
    """
    rewards = -kl_coef * kl * mask
    last = last_token_index(mask)
    has_tokens = last >= 0
    rows = torch.arange(mask.size(0), device=mask.device)[has_tokens]
    rewards[rows, last[has_tokens]] += scores[has_tokens].to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the completion tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``,
    where the value and advantage after a row's last unmasked token are 0 (the episode
    ends there). Returns ``(advantages, returns)``, ``returns = advantages + values``,
    both 0 on masked tokens.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    if rewards.size(1) == 0:
        return torch.zeros_like(rewards), torch.zeros_like(rewards)
    # Every delta at once (the same operations per element as one token at a time); only the
    # recursion over A runs token by token, three operations a step.
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = (rewards + gamma * next_values - values).unbind(1)
    masks = mask.unbind(1)
    decay = gamma * lam
    adv = torch.zeros_like(rewards[:, 0])
    columns = []
    for delta, keep in zip(reversed(deltas), reversed(masks)):
        # A masked (padding) token must not carry the episode's future into earlier tokens.
        adv = (delta + decay * adv) * keep
        columns.append(adv)
    advantages = torch.stack(columns[::-1], dim=1).to(rewards.dtype)
    returns = (advantages + values) * mask
    return advantages, returns


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    clip_low: float, clip_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-level clipped surrogate: mean over tokens of ``max(-A r, -A clip(r, 1-e_lo, 1+e_hi))``.

    Returns ``(loss, clip_fraction, approx_kl)``: the share of tokens where the clipped
    branch is taken, and ``0.5 * mean((log r)^2)`` (the old-to-new policy drift).
    """
    clip_high = clip_low if clip_high is None else clip_high
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
        approx_kl = 0.5 * masked_mean(log_ratio * log_ratio, mask)
    return loss, clip_fraction, approx_kl


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``0.5 * mean(max((V - R)^2, (V_clipped - R)^2))`` with ``V_clipped`` within ``clip`` of the old value.

    ``clip=None`` gives the plain squared error. Returns ``(loss, clip_fraction)``.
    """
    err = (values - returns) ** 2
    if clip is None:
        return 0.5 * masked_mean(err, mask), torch.zeros((), device=values.device)
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((err_clipped > err).to(values.dtype), mask)
    return loss, clip_fraction


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reduce: Reduce | None = None) -> float:
    """``1 - Var(R - V) / Var(R)`` over the unmasked tokens (1 is perfect, 0 is no better than a constant)."""
    _, var_returns = masked_moments(returns, mask, reduce)
    _, var_residual = masked_moments(returns - values, mask, reduce)
    if var_returns.item() <= 0:
        return float("nan")
    return float(1.0 - var_residual / var_returns)
