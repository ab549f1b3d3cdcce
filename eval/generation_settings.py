"""What evaluation samples from: the sampling settings, and a generation config that leaves
the model's own distribution as those settings shape it.

Sampling is from the model's own distribution, changed only by what
:class:`GenerationSettings` chooses (temperature, top-p): every other generation option is
set to its neutral value (:data:`NEUTRAL_GENERATION`) and the checkpoint's
``generation_config.json`` is not merged in (a hub model's repetition penalty, n-gram
blocking, min-p or suppressed tokens would otherwise reshape every distribution sampled
and recorded, and the KL to the reference with it); see :func:`evaluation_generation`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from trl_plus.errors import RecipeError

from .checkpoints import Policy


@dataclass(frozen=True)
class GenerationSettings:
    """How completions are sampled. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    num_samples: int = 1  # completions per prompt
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        checks = {
            "max_new_tokens": self.max_new_tokens >= 1,
            "temperature": self.temperature >= 0,
            "top_p": 0 < self.top_p <= 1,
            "num_samples": self.num_samples >= 1,
            "batch_size": self.batch_size >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise RecipeError(f"invalid value {getattr(self, key)!r}", f"eval.generation.{key}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> GenerationSettings:
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(GenerationSettings))


def samples_own_distribution(settings: GenerationSettings) -> bool:
    """Whether ``settings`` sample from the model's own distribution (temperature 1, no
    top-p, never any top-k): then the log-probability of a completion under the model is
    what sampling computed, and the completions serve as Monte-Carlo KL samples."""
    return settings.temperature == 1.0 and settings.top_p == 1.0


# Every option of transformers' GenerationConfig that reshapes the next-token distribution,
# changes which tokens can be drawn, or where a completion stops, with its neutral value
# (the value that leaves the model's own distribution, and stopping at EOS or
# max_new_tokens, as they are). None means "off" for every one of them as well. Options
# this transformers version does not know are skipped; an option a newer version adds is
# neutral by default, since the checkpoint's generation config is not merged in.
NEUTRAL_GENERATION: dict[str, Any] = {
    # penalties and blocking
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": None,
    # truncation of the distribution (top-p and top-k are the harness's own choice)
    "min_p": None,
    "top_h": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    # forced, suppressed or delayed tokens
    "min_length": 0,
    "min_new_tokens": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "force_words_ids": None,
    "constraints": None,
    # rewriting the scores or the prompt
    "remove_invalid_values": False,
    "renormalize_logits": False,
    "watermarking_config": None,
    "token_healing": False,
    # decoding strategies other than sampling / greedy, one sequence at a time
    "num_beams": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "penalty_alpha": None,
    "dola_layers": None,
    "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None,
    "use_mtp": None,
    # stopping anywhere but at EOS or max_new_tokens
    "stop_strings": None,
    "max_time": None,
}
# What the checkpoint's generation config may keep: which ids are special.
KEPT_FROM_CHECKPOINT = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id")


def _is_neutral(key: str, value) -> bool:
    neutral = NEUTRAL_GENERATION[key]
    if value is None or value is neutral:
        return True
    if neutral is None:
        return False
    try:
        return bool(value == neutral)
    except Exception:  # noqa: BLE001 - a value that cannot be compared is not neutral
        return False


def evaluation_generation_config(settings: GenerationSettings, *, eos_ids: Sequence[int], pad_token_id,
                                 bos_token_id=None):
    """The complete ``GenerationConfig`` evaluation samples with: ``settings``' temperature,
    top-p, length cap and samples per prompt, top-k off, the given special ids, and every
    option of :data:`NEUTRAL_GENERATION` at its neutral value. Nothing comes from a
    checkpoint's generation config."""
    from transformers import GenerationConfig

    sampling = settings.temperature > 0
    known = GenerationConfig().__dict__
    neutral = {k: v for k, v in NEUTRAL_GENERATION.items() if k in known}
    return GenerationConfig(
        **neutral,
        do_sample=sampling,
        temperature=settings.temperature if sampling else None,
        top_p=settings.top_p if sampling else None,
        top_k=0 if sampling else None,
        max_new_tokens=settings.max_new_tokens,
        num_return_sequences=settings.num_samples,
        pad_token_id=pad_token_id,
        eos_token_id=sorted(int(e) for e in eos_ids),
        bos_token_id=bos_token_id,
    )


def _generation_holders(model) -> list:
    """The model objects whose own ``generation_config`` ``generate`` merges in: the model,
    and the model a wrapper (a PEFT model, say) generates with."""
    holders, seen = [], set()
    for m in (model, model.get_base_model() if callable(getattr(model, "get_base_model", None)) else None):
        if m is not None and id(m) not in seen and "generation_config" in getattr(m, "__dict__", {}):
            holders.append(m)
            seen.add(id(m))
    return holders


def check_neutral_generation(resolved, settings: GenerationSettings, source: str | None = None) -> None:
    """Refuse (``RecipeError`` naming the option) a resolved generation config that would
    sample from anything but the model's own distribution as ``settings`` shape it."""
    where = f" of {source}" if source else ""
    for key in NEUTRAL_GENERATION:
        value = getattr(resolved, key, None)
        if _is_neutral(key, value):
            continue
        raise RecipeError(
            f"generation option {key}={value!r}{where} cannot be neutralised for evaluation sampling: samples and "
            f"log-probs would not be the model's own distribution, and the KL to the reference would be wrong "
            f"(it must be {NEUTRAL_GENERATION[key]!r} or unset)",
            "checkpoint",
        )
    sampling = settings.temperature > 0
    chosen = {"do_sample": sampling, "max_new_tokens": settings.max_new_tokens,
              "num_return_sequences": settings.num_samples}
    if sampling:
        chosen.update(temperature=settings.temperature, top_p=settings.top_p)
    for key, want in chosen.items():
        if getattr(resolved, key, want) != want:
            raise RecipeError(f"generation option {key}={getattr(resolved, key)!r}{where} is not the evaluation's "
                              f"{want!r}; evaluation sampling cannot use it", "checkpoint")
    if sampling and getattr(resolved, "top_k", None) not in (None, 0):
        raise RecipeError(f"generation option top_k={resolved.top_k!r}{where} cannot be neutralised for evaluation "
                          "sampling (it must be 0: off)", "checkpoint")


@contextmanager
def evaluation_generation(policy: Policy, settings: GenerationSettings, eos_ids: Sequence[int]):
    """Within the block, ``policy.model.generate(..., generation_config=<yielded config>)``
    samples from the model's own distribution as ``settings`` shape it.

    ``generate`` fills every option left unset with the value in the model's own
    ``generation_config`` (the checkpoint's ``generation_config.json``); the model's is
    replaced, for the block, by one that keeps only the special token ids
    (:data:`KEPT_FROM_CHECKPOINT`), and the config passed sets every option of
    :data:`NEUTRAL_GENERATION` explicitly. What ``generate`` would then resolve is checked
    option by option, and a configuration still not neutral (a model class that adds its
    own settings, say) is refused with a ``RecipeError`` naming the option, never sampled.
    """
    from transformers import GenerationConfig

    model, tok = policy.model, policy.tokenizer
    config = evaluation_generation_config(settings, eos_ids=eos_ids, pad_token_id=tok.pad_token_id,
                                          bos_token_id=tok.bos_token_id)
    holders = _generation_holders(model)
    saved = [m.generation_config for m in holders]
    try:
        for m, own in zip(holders, saved):
            m.generation_config = GenerationConfig(
                **{k: getattr(own, k, None) for k in KEPT_FROM_CHECKPOINT if getattr(own, k, None) is not None}
            )
        prepare = getattr(model, "_prepare_generation_config", None)
        resolved = prepare(config)[0] if callable(prepare) else config
        check_neutral_generation(resolved, settings, policy.source or policy.model_id)
        yield config
    finally:
        for m, own in zip(holders, saved):
            m.generation_config = own
