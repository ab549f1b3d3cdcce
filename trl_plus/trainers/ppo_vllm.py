"""PPO with vLLM rollouts (``use_vllm: true``, ``vllm_mode`` colocate or server): what is refused, what is checked.

RLOO's vLLM path hands PPO the same thing its transformers path does: one list of token
ids per completion (vLLM's ``token_ids``, no padding, at most ``max_tokens`` =
``max_completion_length`` long, ending with the EOS token when vLLM stopped there, without
one when it ran out of tokens). From that list on, both paths are one code path: RLOO
decodes the ids itself for the reward (vLLM's text is never read), right-pads them,
builds ``completion_mask`` from the list lengths and recomputes the old per-token
log-probs with the policy and then the reference's, in the same two passes PPO captures
(vLLM's own log-probs are not requested: there is no importance-sampling correction to
vLLM's sampler in RLOO). PPO's values, rewards and GAE read the same padded tensors. The
weights pushed to vLLM before each rollout are the policy's ``named_parameters``; the
critic is a separate module, so nothing of it is pushed.

What can still break the line-up is a vLLM that does not produce what the trainer asks
for: ``generation_kwargs`` overriding the number of samples, their length, their EOS
handling or their temperature (the old log-probs assume the trainer's), refused here at
start-up; or a server that stops at other EOS tokens than the trainer's, checked at every
rollout (``check_vllm_completions``).
"""

from __future__ import annotations

import torch

from ..errors import RecipeError, TrlPlusError

__all__ = ["VLLM_MODES", "refuse_unsupported_vllm", "check_vllm_completions"]

VLLM_MODES = ("colocate", "server")

# generation_kwargs that vLLM would apply over what the trainer asked for: the field to set instead, and why.
_OVERRIDES = {
    "n": ("num_generations", "vLLM would return another number of completions per prompt than RLOO scores"),
    "best_of": ("num_generations", "vLLM would sample another number of completions per prompt"),
    "max_tokens": ("max_completion_length", "it is the completion length the trainer asks vLLM for"),
    "ignore_eos": (None, "a completion ends at its first EOS token, where its score is put; tokens after it would "
                         "be trained on as if the answer went on"),
    "temperature": ("temperature", "the old log-probs are the policy's at the trainer's temperature; vLLM would "
                                   "sample at another"),
}


def _vllm_installed() -> bool:
    # The question RLOO's vLLM backend asks before it starts, asked the same way.
    from trl.generation import vllm_generation

    return bool(vllm_generation.is_vllm_available())


def refuse_unsupported_vllm(args, section: str = "ppo") -> None:
    """Refuse, before any model is built, a ``use_vllm`` setup whose rollouts PPO cannot line up.

    Nothing is checked when ``args.use_vllm`` is off. ``section`` names the recipe section
    in the error's key (``ppo.vllm_mode``, ``ppo.generation_kwargs.n``).
    """
    if not getattr(args, "use_vllm", False):
        return
    mode = getattr(args, "vllm_mode", None)
    if mode not in VLLM_MODES:
        raise RecipeError(
            f"PPOTrainer runs vLLM rollouts in {' or '.join(repr(m) for m in VLLM_MODES)} mode, got {mode!r}",
            f"{section}.vllm_mode",
        )
    given = args.generation_kwargs or {}
    for key, (instead, why) in _OVERRIDES.items():
        if key in given:
            hint = f"; set {section}.{instead} instead" if instead else ""
            raise RecipeError(
                f"PPOTrainer with use_vllm does not let generation_kwargs set {key!r} (got {given[key]!r}): {why}{hint}",
                f"{section}.generation_kwargs.{key}",
            )
    if not _vllm_installed():
        raise RecipeError(
            "use_vllm is on but vLLM is not installed here (both modes need it in the training process: colocate "
            "runs it, server mode talks to the server through it): install it (pip install 'trl[vllm]', on a "
            "machine with a GPU) or set use_vllm to false",
            f"{section}.use_vllm",
        )


def check_vllm_completions(completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_token_ids) -> None:
    """Raise if a completion holds an EOS token before its last token (PPO scores it as ending there).

    vLLM stops at the EOS tokens it knows (the served model's tokenizer and generation
    config); the trainer cuts at its own (``eos_token_ids``). A server that does not stop at
    one of the trainer's would hand back tokens after an end the trainer's transformers
    path would have cut. Padding (``completion_mask`` 0) is not looked at, so a pad token
    equal to EOS is fine.
    """
    mask = completion_mask.bool()
    eos = torch.isin(completion_ids, torch.as_tensor(list(eos_token_ids), device=completion_ids.device)) & mask
    last = mask & (mask.long().cumsum(1) == mask.long().sum(1, keepdim=True))
    early = eos & ~last
    if early.any():
        rows = early.any(1).nonzero().flatten().tolist()
        raise TrlPlusError(
            f"vLLM returned {len(rows)} completion(s) that go on after an EOS token (rows {rows[:5]} of this rollout; "
            f"the trainer's EOS ids are {sorted(set(eos_token_ids))}): the vLLM server stops at other EOS tokens than "
            "the trainer. Serve the same model folder (its generation_config.json's eos_token_id) that the trainer "
            "loads, or pass the EOS ids as generation_kwargs stop_token_ids"
        )
