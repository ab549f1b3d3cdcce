"""PPO's rollout: per-token log-probs captured from RLOO, per-token rewards, critic values, GAE.

``PPORolloutMixin`` turns RLOO's scored rollout batch into what PPO's loss needs:
``advantages`` (GAE, whitened), ``returns``, ``old_values``, ``old_per_token_logps`` and
``loss_mask`` (completion tokens of the samples the rollout filters kept).
"""

from __future__ import annotations

import math

import torch
from accelerate.utils import gather, gather_object
from trl.trainer.utils import nanstd

from ..errors import TrlPlusError
from . import ppo_math

# Mean |log p - log p_ref| per token at a run's first rollout above which the reference is not the policy.
REFERENCE_TOLERANCE = 1e-2


class PPORolloutMixin:
    """Rollout processing for ``PPOTrainer`` (mixed in before ``trl.RLOOTrainer``)."""

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._capture is not None and not torch.is_grad_enabled():
            # RLOO computes per-token old (policy) then reference log-probs but keeps only sums: keep them.
            self._capture.append(out[0])
        return out

    def _process_slice(self, n_local: int) -> slice:
        start = self.accelerator.process_index * n_local
        return slice(start, start + n_local)

    def _reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(t, reduction="sum") if self.accelerator.num_processes > 1 else t

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        if mode == "train" and self.kl_schedule is not None:
            self._apply_schedule()
        self._capture = []
        try:
            out = super()._generate_and_score_completions(inputs)
            captured = self._capture
        finally:
            self._capture = None
        old_logps, ref_logps = self._check_captured(captured, out, mode)
        scored, self._scored = self._scored, None
        metrics = self._metrics[mode]
        for key in [k for k in metrics if k.startswith("rewards/") or k == "kl"]:
            # RLOO's per-function entries (the stand-in function's, with reward sources) and per-token
            # KL: replaced by ours below.
            if metrics[key]:
                metrics[key].pop()
            if not metrics[key]:
                del metrics[key]

        args = self.args
        device = old_logps.device
        completion_mask = out["completion_mask"].to(old_logps.dtype)
        score = scored["reward"].to(old_logps.dtype)
        if self.reward_clip_range:  # RLOO's meaning: the total reward, before the KL penalty (NaN stays NaN)
            score = score.clamp(min=self.reward_clip_range[0], max=self.reward_clip_range[1])
        if args.missing_eos_penalty is not None:
            score = torch.where(scored["has_eos"], score, score - args.missing_eos_penalty)

        rewards_cols = {"reward": _to_list(score)}
        rewards_cols.update({f"reward/{k}": _to_list(v) for k, v in scored["per_source"].items()})
        self.hooks.rollout_scored(
            trainer=self,
            step=self.state.global_step,
            prompts=scored["prompts"],
            completions=scored["completions"],
            rewards=rewards_cols,
        )

        scored_ok = ~torch.isnan(score)
        keep = (scored_ok & self._rollout_mask(scored, rewards_cols, device)) if self._rollout_chain else scored_ok
        n_unscored, n_dropped = (int(n) for n in self._reduce_sum(torch.stack([~scored_ok, ~keep]).sum(dim=1).float()))
        if mode == "train":
            self._rollout_unscored += n_unscored
            self._rollout_dropped += n_dropped
        loss_mask = completion_mask * keep.unsqueeze(1).to(completion_mask.dtype)

        # Per-token rewards with the KL penalty inside (measured on every sample, dropped or not).
        kl = ppo_math.kl_per_token(old_logps, ref_logps, args.kl_estimator) * completion_mask
        rewards = ppo_math.per_token_rewards(torch.nan_to_num(score, nan=0.0), kl, loss_mask, self.kl_coef)
        if args.whiten_rewards:
            rewards = ppo_math.masked_whiten(rewards, loss_mask, shift_mean=False, reduce=self._reduce_sum)

        values = self._rollout_values(out, mode)
        if values.requires_grad:
            # The critic's forward for the loss too (on-policy: the loss runs once on this batch, before
            # the critic steps): kept with its graph for the loss, used detached here.
            out["values_for_loss"] = values
            values = values.detach()
        values = values * loss_mask
        advantages, returns = ppo_math.gae(rewards, values, loss_mask, args.gamma, args.lam)
        if args.normalize_advantages:
            advantages = ppo_math.masked_whiten(advantages, loss_mask, reduce=self._reduce_sum)

        # Logs: the measured KL is the mean per-sequence sum (what the adaptive controller targets).
        seq_stats = self._reduce_sum(
            torch.stack([kl.sum(), completion_mask.sum(), torch.tensor(float(kl.size(0)), device=device)])
        )
        kl_seq = (seq_stats[0] / seq_stats[2].clamp(min=1)).item()
        if self.beta != 0.0:  # measured only with a reference, as RLOO does
            metrics["kl"].append(kl_seq)
            metrics["kl_per_token"].append((seq_stats[0] / seq_stats[1].clamp(min=1)).item())
        for name, values_src in scored["per_source"].items():
            everywhere = gather(values_src.float().to(device))
            mean = torch.nanmean(everywhere).item()
            metrics[f"reward/{name}"].append(mean)
            metrics[f"rewards/{name}/mean"].append(mean)  # RLOO's names, for dashboards that read them
            metrics[f"rewards/{name}/std"].append(nanstd(everywhere).item())
        if args.missing_eos_penalty is not None:
            metrics["reward/with_eos_penalty"].append(float(torch.nanmean(gather(score)).item()))
        metrics["value/explained_variance"].append(
            ppo_math.explained_variance(values, returns, loss_mask, self._reduce_sum)
        )
        metrics["value/mean"].append(float(ppo_math.masked_mean(values, loss_mask).item()))
        metrics["returns/mean"].append(float(ppo_math.masked_mean(returns, loss_mask).item()))
        metrics["rollouts/dropped"].append(float(n_dropped))
        if mode == "train":
            metrics["rollouts/dropped_total"] = [float(self._rollout_dropped)]
            metrics["rollouts/unscored_total"] = [float(self._rollout_unscored)]
            for count in self._rollout_chain.counts:
                metrics[f"rollouts/dropped_total/{count.name}"] = [float(count.dropped)]
            self._kl_stats = {
                "reward": float(torch.nanmean(gather(scored["reward"])).item()),
                # Samples in all rollouts so far, over all processes: what the adaptive controller's horizon counts.
                "samples": int(self._kl_stats.get("samples", 0)) + int(seq_stats[2].item()),
            }
            if self.beta != 0.0:
                self._kl_stats.update(kl=kl_seq, kl_per_token=metrics["kl_per_token"][-1])

        self._log_sample_advantages(advantages, loss_mask)
        out["advantages"] = advantages.detach()
        out["returns"] = returns.detach()
        out["old_values"] = values.detach()
        out["old_per_token_logps"] = old_logps
        out["loss_mask"] = loss_mask
        return out

    def _check_captured(self, captured: list, out: dict, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-token old and reference log-probs RLOO computed (in that order) and kept only as sums.

        Captured by call order, so checked: exactly the calls expected, summing to what RLOO
        kept (``old_logps``) and logged (``kl``, the per-token mean log-ratio); and, at the first
        rollout of a run, a reference that is the initial policy (KL about 0). With ``use_vllm`` the
        passes are the same (RLOO recomputes both from the models, not from vLLM), and vLLM's
        completions are checked to end at their first EOS, as the transformers path cuts them.
        """
        if self.use_vllm:
            from .ppo_vllm import check_vllm_completions

            check_vllm_completions(out["completion_ids"], out["completion_mask"], self.eos_token_ids)
        expected = 2 if self.beta != 0.0 else 1
        if len(captured) != expected:
            raise TrlPlusError(
                f"PPOTrainer expected {expected} log-prob passes in RLOO's rollout (policy, reference), saw "
                f"{len(captured)}: this TRL version computes them differently than trl-plus was built for"
            )
        old = captured[0].detach()
        ref = captured[1].detach() if expected == 2 else old  # no reference (beta 0): KL 0, not measured
        mask = out["completion_mask"].to(old.dtype)
        if not torch.allclose((old * mask).sum(1), out["old_logps"].to(old.dtype), rtol=1e-4, atol=1e-3):
            raise TrlPlusError("PPOTrainer: the captured policy log-probs do not sum to RLOO's old_logps")
        log_ratio = self._reduce_sum(torch.stack([((old - ref) * mask).sum(), ((old - ref).abs() * mask).sum(), mask.sum()]))
        rloo_kl = self._metrics[mode].get("kl")
        if rloo_kl and not math.isclose(rloo_kl[-1], (log_ratio[0] / log_ratio[2].clamp(min=1)).item(), rel_tol=1e-3, abs_tol=1e-4):
            raise TrlPlusError("PPOTrainer: the captured reference log-probs do not match RLOO's logged KL")
        if mode == "train" and self.state.global_step == 0 and not self._reference_checked:
            self._reference_checked = True
            drift = (log_ratio[1] / log_ratio[2].clamp(min=1)).item()
            if self.args.disable_dropout and drift > REFERENCE_TOLERANCE:
                raise TrlPlusError(
                    f"the reference model is not the initial policy: at the first rollout the policy's and the "
                    f"reference's log-probs differ by {drift:.3g} per token on average (at most {REFERENCE_TOLERANCE} "
                    f"expected). RLOO loads the reference from model.config._name_or_path "
                    f"({getattr(self.model.config, '_name_or_path', '')!r}): point it at a folder holding exactly "
                    "the policy's weights (save_pretrained), or pass the policy by name"
                )
        return old, ref

    def _log_sample_advantages(self, advantages: torch.Tensor, loss_mask: torch.Tensor) -> None:
        """The completions table's ``advantage`` column: PPO's (each sample's mean GAE advantage over
        its tokens, 0 for a dropped sample) in place of the RLOO advantages RLOO put there."""
        per_sample = gather(ppo_math.masked_mean(advantages, loss_mask, dim=1)).tolist()
        column = self._logs["advantages"]
        for _ in range(min(len(per_sample), len(column))):
            column.pop()
        column.extend(per_sample)

    def _rollout_mask(self, scored, rewards_cols, device) -> torch.Tensor:
        """Run the rollout filters on the whole (all-process) batch, so every rank decides alike."""
        batch = {
            "prompt": gather_object(list(scored["prompts"])),
            "completion": gather_object(list(scored["completions"])),
        }
        for key, values in rewards_cols.items():
            batch[key] = gather_object(list(values))
        keep = self._rollout_chain.mask(batch)
        n_local = len(scored["prompts"])
        return torch.tensor(keep[self._process_slice(n_local)], dtype=torch.bool, device=device)


def _to_list(t: torch.Tensor) -> list:
    return [None if math.isnan(v) else v for v in t.float().cpu().tolist()]
