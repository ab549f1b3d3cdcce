"""Batched sampling from a checkpoint on a prompt set, cached on disk.

Prompts are sorted by length and left-padded, so a batch wastes little compute and
every row's last prompt token sits at the same position. A cache file
(``generations.jsonl``) keyed by model, prompt-set hash, sampling settings and seed
means a re-run, or scoring with a new judge, never samples again.

Each model samples from its own random stream: the seed actually used is derived from the
model's identity, the configured seed and a stream name (:func:`sample_seed`), so a
candidate close to its reference does not replay the reference's completions, while the
same model under the same settings always draws the same ones (and hits the cache).

Sampling is from the model's own distribution, changed only by what
:class:`GenerationSettings` chooses (temperature, top-p): every other generation option is
set to its neutral value (:data:`NEUTRAL_GENERATION`) and the checkpoint's
``generation_config.json`` is not merged in (a hub model's repetition penalty, n-gram
blocking, min-p or suppressed tokens would otherwise reshape every distribution sampled
and recorded, and the KL to the reference with it); see :func:`evaluation_generation`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl_plus.errors import DataError, RecipeError


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


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------


@dataclass
class Policy:
    """A loaded causal LM with its tokenizer and a stable id for caching."""

    model: Any
    tokenizer: Any
    model_id: str | None  # None: in-memory model without an id, never cached
    source: str | None = None  # the name or path it was loaded from (None: built in memory)

    @property
    def device(self):
        return next(self.model.parameters()).device


_CONTENT_HASHES: dict[tuple, str] = {}


def _content_hash(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a process hashes each once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CONTENT_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _CONTENT_HASHES[key] = digest.hexdigest()
    return _CONTENT_HASHES[key]


def _is_weights(f: Path) -> bool:
    """Weight shards and the model config: what the model computes with. Trainer files
    beside them (optimizer and scheduler state, training_args.bin, which holds the output
    folder's path) are left out, or the same weights would get another id elsewhere."""
    stem = f.name.split(".")[0].split("-")[0]
    return (f.suffix in (".safetensors", ".bin", ".pt") and stem in ("model", "pytorch_model", "adapter_model")) or \
        f.name == "config.json"


def fingerprint(name_or_path: str, adapter: str | None = None, revision: str | None = None) -> str:
    """A cache id for a checkpoint: the content of its weight files and config.

    The id is the model, not where it lies: a checkpoint re-trained into the same folder
    gets a new id when its weights changed, and a re-run that trains the same weights
    gets the same id, hence the same sampling seeds and the same numbers.
    """
    parts = []
    for ref in (name_or_path, adapter):
        if ref is None:
            continue
        path = Path(ref)
        if path.is_dir():
            files = [(f.name, _content_hash(f)) for f in sorted(path.iterdir()) if _is_weights(f)]
            parts.append({"files": files})
        else:
            parts.append({"id": ref, "revision": revision})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _base_and_adapter(name: str, adapter: str | None) -> tuple[str, str | None]:
    from trl_plus.tiny import resolve

    name = resolve(name)
    if adapter is None and (Path(name) / "adapter_config.json").exists():
        adapter = name
        name = resolve(json.loads((Path(name) / "adapter_config.json").read_text())["base_model_name_or_path"])
    return name, adapter


def checkpoint_id(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    """The cache id :func:`load_policy` gives the checkpoint, computed without loading it
    (a folder holding a PEFT adapter counts as its base model plus the adapter)."""
    name, adapter = _base_and_adapter(str(name_or_path), None)
    return fingerprint(name, adapter, revision)


DEFAULT_STREAM = "candidate"


def sample_seed(model_identity: str | None, seed: int, stream: str = DEFAULT_STREAM) -> int:
    """The seed a model samples with: a stable hash of its identity (a :class:`Policy`'s
    ``model_id``, :func:`checkpoint_id` of a path), the configured ``seed`` and a stream name.

    Different models, or different streams of one model (the harness draws a checkpoint's
    own completions from ``"candidate"``, a reference checkpoint's from ``"reference"``
    and extra KL samples from ``"kl"``), get unrelated seeds; the same arguments always
    give the same seed. A model without an identity (``None``) shares its stream with
    every other model without one. The value fits in 48 bits, so it survives JSON readers
    that hold numbers as doubles.
    """
    payload = json.dumps({"model": model_identity, "seed": int(seed), "stream": stream}, sort_keys=True)
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:6], "big")


def load_policy(
    name_or_path: Any,
    *,
    adapter: str | None = None,
    tokenizer: Any = None,
    hooks=None,
    device: str | None = None,
    dtype: str = "float32",
    revision: str | None = None,
    trust_remote_code: bool = False,
    model_id: str | None = None,
) -> Policy:
    """A checkpoint (folder, hub id, ``tiny:`` name, or a folder holding a PEFT adapter),
    or an in-memory model (then ``tokenizer`` is required), ready for generation."""
    import torch
    from transformers import AutoTokenizer

    from trl_plus.loading import check_model_name
    from trl_plus.manager import Hooks

    if isinstance(name_or_path, Policy):
        return name_or_path
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name_or_path, (str, os.PathLike)):
        if tokenizer is None:
            raise DataError("an in-memory model needs its tokenizer")
        model = name_or_path
        policy = Policy(model.to(device).eval(), _ready_tokenizer(tokenizer), model_id)
        return policy
    check_model_name(str(name_or_path), "checkpoint")
    name, adapter = _base_and_adapter(str(name_or_path), adapter)
    init = {"dtype": getattr(torch, dtype), "trust_remote_code": trust_remote_code}
    if revision:
        init["revision"] = revision
    try:
        model = Hooks.of(hooks).load_model(name, "policy", init)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        if tokenizer is None:
            source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else name
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise RecipeError(f"cannot load checkpoint {str(name_or_path)!r}: {exc}", "checkpoint") from None
    return Policy(
        model.to(device).eval(),
        _ready_tokenizer(tokenizer),
        model_id or fingerprint(name, adapter, revision),
        str(name_or_path),
    )


def _ready_tokenizer(tokenizer):
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DataError("the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    return [tokenizer(p)["input_ids"] for p in prompts]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


def cut_at_eos(tokens: Sequence[int], eos_ids: set[int]) -> list[int]:
    """The completion up to and including its first EOS (what follows is padding)."""
    out = []
    for t in tokens:
        out.append(int(t))
        if t in eos_ids:
            break
    return out


def eos_ids_of(model, tokenizer) -> set[int]:
    ids = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (eos if isinstance(eos, list) else [eos]) + [tokenizer.eos_token_id]:
        if value is not None:
            ids.add(int(value))
    return ids


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


def _logprob_recorder(keep_distributions: bool = False):
    """A logits processor that keeps the log-probability of each sampled token.

    ``generate`` calls it once per new token with the ids so far; the token sampled at the
    previous call is the last of them, so its log-probability is read from the previous
    call's log-softmax (the last token's after ``generate`` returns, by :meth:`finish`).
    Only that one distribution is held, never the logits of every step, unless
    ``keep_distributions``: then every step's log-softmax is kept for :meth:`finish`.
    """
    import torch
    from transformers import LogitsProcessor

    class Recorder(LogitsProcessor):
        def __init__(self):
            self.prev, self.steps, self.distributions = None, [], []

        def __call__(self, input_ids, scores):
            if self.prev is not None:
                self.steps.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
            self.prev = torch.log_softmax(scores.float(), dim=-1)
            if keep_distributions:
                self.distributions.append(self.prev)
            return scores

        def finish(self, new_tokens):
            """Per-token log-probs of ``new_tokens`` (rows x steps) and, when kept, every
            step's log-softmax (rows x steps x vocabulary, else None); then reset."""
            if self.prev is not None:
                self.steps.append(self.prev.gather(1, new_tokens[:, -1:]).squeeze(1))
            out = torch.stack(self.steps, dim=1) if self.steps else new_tokens.new_zeros(new_tokens.shape, dtype=torch.float)
            dists = torch.stack(self.distributions, dim=1) if self.distributions else None
            self.prev, self.steps, self.distributions = None, [], []
            return out, dists

    return Recorder()


def sample_token_ids(
    policy: Policy,
    prompt_ids: Sequence[Sequence[int]],
    settings: GenerationSettings,
    *,
    progress: bool | str = True,
    logprobs_out: list | None = None,
    distributions_out: list | None = None,
) -> list[list[int]]:
    """Completion token ids (cut after the first EOS), prompt-major:
    ``num_samples`` rows per prompt, in the order of ``prompt_ids``.

    ``logprobs_out``: a list that receives, in the same order, each completion's summed
    log-probability under the model as sampling computed it (no second forward pass);
    only when ``settings`` sample the model's own distribution
    (:func:`samples_own_distribution`), otherwise it is left empty.

    ``distributions_out``: likewise (same condition), a list that receives each
    completion's next-token log-softmax at every one of its positions, a CPU float tensor
    of completion length x vocabulary (what the token-level KL needs of the policy; the
    caller bounds its size, which is rows x max_new_tokens x vocabulary floats).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList

    model, tok = policy.model, policy.tokenizer
    eos = eos_ids_of(model, tok)
    order = sorted(range(len(prompt_ids)), key=lambda i: (-len(prompt_ids[i]), i))
    results: list[list[list[int]] | None] = [None] * len(prompt_ids)
    own = samples_own_distribution(settings)
    keep = own and distributions_out is not None
    record = own and (logprobs_out is not None or keep)
    recorder = _logprob_recorder(keep_distributions=keep) if record else None
    sums: list[list[float] | None] = [None] * len(prompt_ids)
    dists: list[list | None] = [None] * len(prompt_ids)
    torch.manual_seed(settings.seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(settings.seed)
    desc = progress if isinstance(progress, str) else "generating"
    bar = tqdm(total=len(order), desc=desc, unit="prompt", disable=not progress, leave=False)
    try:
        with evaluation_generation(policy, settings, eos) as config:
            for start in range(0, len(order), settings.batch_size):
                chunk = order[start : start + settings.batch_size]
                ids, mask = left_pad([prompt_ids[i] for i in chunk], tok.pad_token_id)
                ids, mask = ids.to(policy.device), mask.to(policy.device)
                with torch.no_grad():
                    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                         logits_processor=LogitsProcessorList([recorder]) if record else None)
                new_t = out[:, ids.shape[1] :]
                new = new_t.tolist()
                token_lp, step_dists = recorder.finish(new_t) if record else (None, None)
                token_lp = token_lp.tolist() if record else None
                step_dists = step_dists.cpu() if keep else None
                for j, i in enumerate(chunk):
                    k = slice(j * settings.num_samples, (j + 1) * settings.num_samples)
                    results[i] = [cut_at_eos(r, eos) for r in new[k]]
                    if record:
                        sums[i] = [float(sum(lp[: len(r)])) for lp, r in zip(token_lp[k], results[i])]
                    if keep:
                        dists[i] = [step_dists[j * settings.num_samples + m, : len(r)]
                                    for m, r in enumerate(results[i])]
                bar.update(len(chunk))
    finally:
        bar.close()
    if logprobs_out is not None and record:
        logprobs_out.extend(x for per_prompt in sums for x in per_prompt)  # type: ignore[union-attr]
    if keep:
        distributions_out.extend(d for per_prompt in dists for d in per_prompt)  # type: ignore[union-attr]
    return [row for per_prompt in results for row in per_prompt]  # type: ignore[union-attr]


def decode(tokenizer, completions: Sequence[Sequence[int]]) -> list[str]:
    return tokenizer.batch_decode(completions, skip_special_tokens=True)


# ---------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------


def prompts_hash(prompts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()


# Part of every cache key: rows sampled before generation was neutralised (when a
# checkpoint's generation_config.json could still reshape the distribution) never match.
SAMPLING_RULE = "own-distribution"


def cache_key(kind: str, model_id: str, prompts_sha: str, settings: GenerationSettings, **extra) -> str:
    payload = {"kind": kind, "model": model_id, "prompts": prompts_sha, "settings": settings.to_dict(),
               "sampling": SAMPLING_RULE, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cache_lookup(cache_path: str | Path | None, key: str) -> dict | None:
    if cache_path is None or not Path(cache_path).exists():
        return None
    found = None
    with open(cache_path) as f:
        for line in f:
            if key in line:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a crash: ignore it
                    continue
                if row.get("key") == key:
                    found = row
    return found


def cache_store(cache_path: str | Path | None, row: dict) -> None:
    if cache_path is None:
        return
    path = Path(cache_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


@dataclass
class Completions:
    """What :func:`sample_completions` returns: the decoded completions (prompt-major) with
    the token ids they were decoded from and the seed they were sampled with."""

    texts: list[str]
    token_ids: list[list[int]] | None  # None: a cache row written before ids were kept
    seed: int
    model_id: str | None
    logprobs: list[float] | None = None  # each completion's log-prob under the model, when sampling kept it
    # each completion's next-token log-softmax at its positions, when asked for and sampled
    # here (never cached: a cache hit leaves it None)
    distributions: list | None = None


def sample_completions(
    model_or_path: Any,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    cache_path: str | Path | None = None,
    *,
    tokenizer: Any = None,
    model_id: str | None = None,
    hooks=None,
    progress: bool | str = True,
    derive_seed: bool = True,
    stream: str = DEFAULT_STREAM,
    keep_distributions: bool = False,
) -> Completions:
    """:func:`generate`, keeping the completions' token ids (decoding and re-encoding text
    does not give them back exactly) and the seed used; with ``keep_distributions``, also
    the model's next-token distributions along each completion when they are sampled here
    from the model's own distribution (see ``distributions_out`` of :func:`sample_token_ids`)."""
    settings = settings or GenerationSettings()
    prompts = list(prompts)
    if model_id is None and isinstance(model_or_path, (str, os.PathLike)):
        model_id = checkpoint_id(model_or_path)
    if model_id is None and isinstance(model_or_path, Policy):
        model_id = model_or_path.model_id
    seed = sample_seed(model_id, settings.seed, stream) if derive_seed else settings.seed
    if not prompts:
        return Completions([], [], seed, model_id)
    # keyed by what is actually sampled: the seed in use, not the configured one
    used = settings.replace(seed=seed)
    sha = prompts_hash(prompts)
    key = cache_key("generations", model_id, sha, used) if model_id else None
    if key:
        hit = cache_lookup(cache_path, key)
        if hit is not None:
            return Completions(hit["completions"], hit.get("token_ids"), seed, model_id, hit.get("logprobs"))
    policy = load_policy(model_or_path, tokenizer=tokenizer, hooks=hooks, model_id=model_id)
    logprobs: list[float] = []
    distributions: list | None = [] if keep_distributions else None
    ids = sample_token_ids(policy, encode_prompts(policy.tokenizer, prompts), used, progress=progress,
                           logprobs_out=logprobs, distributions_out=distributions)
    completions = decode(policy.tokenizer, ids)
    if key:
        cache_store(
            cache_path,
            {"key": key, "kind": "generations", "model": model_id, "prompts_sha256": sha,
             "settings": used.to_dict(), "seed": seed, "configured_seed": settings.seed, "stream": stream,
             "completions": completions, "token_ids": ids, **({"logprobs": logprobs} if logprobs else {})},
        )
    return Completions(completions, ids, seed, model_id, logprobs or None, distributions or None)


def generate(
    model_or_path: Any,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    cache_path: str | Path | None = None,
    *,
    tokenizer: Any = None,
    model_id: str | None = None,
    hooks=None,
    progress: bool | str = True,
    derive_seed: bool = True,
    stream: str = DEFAULT_STREAM,
) -> list[str]:
    """Completions for ``prompts``: ``settings.num_samples`` per prompt, prompt-major.

    ``model_or_path`` is a checkpoint name/path, a :class:`Policy`, or an in-memory
    model (with ``tokenizer``; cached only when ``model_id`` is given). With
    ``cache_path``, a hit returns the stored completions without loading anything.

    With ``derive_seed`` (the default) the sampling seed is
    ``sample_seed(model identity, settings.seed, stream)``, not ``settings.seed`` itself:
    two models never share a random stream, and calling ``generate(checkpoint, prompts,
    settings, cache)`` gives exactly the completions :func:`evaluate_checkpoint` judged
    for that checkpoint as the candidate (a cache hit when they share the cache file).
    ``derive_seed=False`` samples with ``settings.seed`` as given; ``stream`` names
    another stream of the same model (the harness samples reference checkpoints from
    ``"reference"``).
    """
    return sample_completions(
        model_or_path, prompts, settings, cache_path, tokenizer=tokenizer, model_id=model_id, hooks=hooks,
        progress=progress, derive_seed=derive_seed, stream=stream,
    ).texts
