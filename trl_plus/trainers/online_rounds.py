"""One round of online DPO: the prompts, completions sampled from the current policy,
their scores, and the (prompt, chosen, rejected) pairs DPO trains on next.

:func:`draw_round` does it for :class:`trl_plus.trainers.online_dpo.OnlineDPOTrainer`:

1. the round's prompts: all of the prompt dataset, or ``prompts_per_round`` of them drawn
   at random (seeded by the run's seed and the round), each process sampling its share;
2. ``samples_per_prompt`` completions per prompt from the policy as it is now
   (``trainers.sampling.sample``: batched, left-padded, seeded by the round and the draw);
3. the reward sources (the ``RewardMix``) score them; the nothing-scored guard;
   ``trl_plus_rollout_scored``; the rollout filters, whose dropped completions are left out;
4. one pair per prompt: its best completion chosen, its worst rejected
   (``trainers.sampling.best_worst_pairs``; unscored completions and ties give none).

A draw that gives no pair at all is drawn again (another seed), up to :data:`MAX_DRAWS`
times; then the round stops the run with an error that says why.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field

from ..errors import DataError
from ..reward_checks import unscored_guard
from .common import as_text, tokenizer_of
from .sampling import best_worst_pairs, sample

__all__ = ["Round", "draw_round", "MAX_DRAWS"]

MAX_DRAWS = 3  # draws a round may take to give at least one pair


@dataclass
class Round:
    """What a round drew: its pairs and what is logged of it (``online_dpo/*``, ``reward``)."""

    index: int  # 0-based; logged 1-based as online_dpo/round
    pairs: list[dict]
    logs: dict = field(default_factory=dict)


def _chat(prompt) -> bool:
    return isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt)


def _as_prompt_text(tokenizer, prompt) -> str:
    """What the policy is given: the prompt, or a conversation rendered by the chat template."""
    if _chat(prompt):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return prompt


def round_prompts(trainer, index: int) -> list:
    """The round's prompts, the same on every process."""
    prompts = trainer.prompt_dataset["prompt"]
    wanted = trainer.args.prompts_per_round
    if wanted is None or wanted >= len(prompts):
        return list(prompts)
    chosen = random.Random(trainer.args.seed * 1_000_003 + index).sample(range(len(prompts)), wanted)
    return [prompts[i] for i in sorted(chosen)]


def _gather(trainer, values: list) -> list:
    if trainer.accelerator.num_processes == 1:
        return values
    from accelerate.utils import gather_object

    return gather_object(values)


def _sample_local(trainer, prompts: list, seed: int) -> tuple[list[str], int]:
    """This process's completions: ``samples_per_prompt`` per prompt, prompt after prompt."""
    args = trainer.args
    tokenizer = tokenizer_of(trainer.processing_class)
    texts = [_as_prompt_text(tokenizer, p) for p in prompts for _ in range(args.samples_per_prompt)]
    model = trainer.accelerator.unwrap_model(trainer.model)
    training = model.training
    model.eval()  # no dropout while sampling; the compute counter leaves these forwards out
    try:
        completions, tokens = sample(model, tokenizer, texts, max_new_tokens=args.max_completion_length,
                                     temperature=args.temperature, batch_size=args.generation_batch_size, seed=seed)
    finally:
        model.train(training)
    counter = getattr(trainer, "compute_counter", None)
    if counter is not None:
        counter.add_generated(tokens)
    return completions, tokens


def _draw(trainer, prompts: list, index: int, attempt: int) -> tuple[list[dict], dict]:
    """One draw of the round: sampled, scored, filtered and paired (on every process alike)."""
    args, mix, k = trainer.args, trainer.reward_mix, trainer.args.samples_per_prompt
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    local = prompts[rank::world]
    completions, _ = _sample_local(trainer, local, seed=args.seed * 1_000_003 + 7919 * (index + 1) + attempt)
    prompt_texts = [as_text(p) for p in local for _ in range(k)]
    scores = mix.score(prompt_texts, completions)
    rewards = {"reward": scores.total, **{f"reward/{label}": v for label, v in scores.per_source.items()}}
    trainer.hooks.rollout_scored(trainer=trainer, step=trainer.state.global_step, prompts=prompt_texts,
                                 completions=completions, rewards=rewards)
    batch = {"prompt": _gather(trainer, prompt_texts), "completion": _gather(trainer, completions),
             **{key: _gather(trainer, list(values)) for key, values in rewards.items()}}
    pair_prompts = _gather(trainer, list(local))
    import torch

    total = batch["reward"]
    unscored_guard(trainer).check(torch.tensor([math.nan if v is None else v for v in total]), training=True)
    keep = [v is not None for v in total]
    chain = trainer._rollout_chain
    if chain:
        keep = [a and b for a, b in zip(keep, chain.mask(batch))]
    dropped = sum(v is not None and not kept for v, kept in zip(total, keep))
    trainer._rollout_dropped += dropped
    trainer._rollout_unscored += sum(v is None for v in total)
    trainer._samples += len(total)
    kept_scores = [v if kept else None for v, kept in zip(total, keep)]
    n = len(pair_prompts)
    pairs = best_worst_pairs(pair_prompts, [batch["completion"][i * k:(i + 1) * k] for i in range(n)],
                             [kept_scores[i * k:(i + 1) * k] for i in range(n)])
    if pairs and _chat(pair_prompts[0]):
        for row in pairs:
            row["chosen"] = [{"role": "assistant", "content": row["chosen"]}]
            row["rejected"] = [{"role": "assistant", "content": row["rejected"]}]
    return pairs, _draw_logs(batch, total, pairs, n, dropped)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _draw_logs(batch: dict, total: list, pairs: list[dict], prompts: int, dropped: int) -> dict:
    logs = {"online_dpo/prompts": float(prompts), "online_dpo/completions": float(len(total)),
            "online_dpo/pairs_formed": float(len(pairs)), "online_dpo/ties": float(prompts - len(pairs)),
            "online_dpo/unscored": float(sum(v is None for v in total)), "rollouts/dropped": float(dropped)}
    scored = [v for v in total if v is not None]
    if scored:
        logs["reward"] = statistics.fmean(scored)
        logs["reward_std"] = statistics.pstdev(scored)
    for key, values in batch.items():
        if key.startswith("reward/") and (mean := _mean(values)) is not None:
            logs[key] = mean
    if pairs:
        logs["online_dpo/reward_margin"] = statistics.fmean(p["chosen_reward"] - p["rejected_reward"] for p in pairs)
    return logs


def draw_round(trainer, index: int) -> Round:
    """Round ``index``'s pairs (see the module), drawn again while a draw gives none."""
    prompts = round_prompts(trainer, index)
    for attempt in range(MAX_DRAWS):
        pairs, logs = _draw(trainer, prompts, index, attempt)
        if pairs:
            logs.update({"online_dpo/round": float(index + 1), "online_dpo/draws": float(attempt + 1)})
            return Round(index, pairs, logs)
    k = trainer.args.samples_per_prompt
    raise DataError(
        f"online DPO round {index + 1}: {MAX_DRAWS} draws of {k} completions for each of {len(prompts)} prompts gave "
        "no pair to train on (every prompt's completions were unscored, dropped by the rollout filters, or tied "
        f"in reward); raise online_dpo.samples_per_prompt or online_dpo.temperature, or check the reward sources "
        f"({', '.join(trainer.reward_mix.names)})"
    )
