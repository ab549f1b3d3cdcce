"""The on-disk cache behind ``trl_plus.DPOTrainer(ref_logps_cache=...)``.

A pair's reference log-probs depend on the reference model, the tokenizer, the tokenized
pair and the settings that shape the reference forward pass, never on beta or the seed.
So a sweep computes them once, with TRL's own precompute, and every later run loads them.

One file per key in the cache folder: ``<key>.safetensors`` (the two log-prob columns and
a digest per row) and ``<key>.json`` (what went into the key, for people). The key is
built from the multiset of row digests, so the same rows in another order still hit;
the stored values are matched back to the rows by digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

FORMAT = 1
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
# Names and versions that say where a config came from, not what the model computes.
_PROVENANCE_KEYS = {"_name_or_path", "name_or_path", "_commit_hash", "transformers_version"}
_SCALARS = (bool, int, float, str, type(None))


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def weights_digest(model) -> str:
    """Content hash of a module's state dict: names, dtypes, shapes and bytes."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        h.update(flat.view(torch.uint8).numpy())
    return h.hexdigest()


def _without_provenance(value):
    if isinstance(value, dict):
        return {k: _without_provenance(v) for k, v in value.items() if k not in _PROVENANCE_KEYS}
    if isinstance(value, (list, tuple)):
        return [_without_provenance(v) for v in value]
    return value


def architecture_digest(model) -> str:
    """What besides the weights fixes the forward pass: class, config, attention kernel."""
    config = getattr(model, "config", None)
    values = _without_provenance(config.to_dict()) if config is not None else None
    attn = getattr(config, "_attn_implementation", None)
    return _sha(json.dumps([type(model).__name__, values, attn], sort_keys=True, default=str))


def tokenizer_digest(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())
    special = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    parts = [
        type(tokenizer).__name__, vocab, special, tokenizer.pad_token_id,
        getattr(tokenizer, "chat_template", None), tokenizer.padding_side, tokenizer.truncation_side,
    ]
    return _sha(json.dumps(parts, sort_keys=True, default=str))


def row_columns(dataset) -> list[str]:
    return sorted(c for c in dataset.column_names if c not in REF_COLUMNS)


def row_digests(dataset) -> list[bytes]:
    """One digest per row, over every column (token ids and any text or metadata)."""
    columns = row_columns(dataset)
    digests = []
    for batch in dataset.select_columns(columns).with_format(None).iter(batch_size=1000):
        for row in zip(*(batch[c] for c in columns)):
            text = json.dumps(row, separators=(",", ":"), default=str).encode()
            digests.append(hashlib.blake2b(text, digest_size=16).digest())
    return digests


def _describe(obj) -> dict:
    """A collator's class and its plain settings (pad id, max length, truncation...)."""
    simple = {k: v for k, v in sorted(vars(obj).items()) if isinstance(v, _SCALARS)} if hasattr(obj, "__dict__") else {}
    return {"class": f"{type(obj).__module__}.{type(obj).__qualname__}", **simple}


def _versions() -> dict:
    import torch
    import transformers
    import trl

    from ..version import __version__

    return {
        "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
        "trl_plus": __version__,
    }


def reference_digest(trainer) -> dict:
    """The reference the precompute actually runs: ``ref_model``, else the policy as it is
    before training (TRL's reference when none is given; with PEFT, the adapter is
    switched off for it, and the adapters' initial weights are part of the hash)."""
    model = trainer.ref_model if trainer.ref_model is not None else trainer.model
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        # The model is sharded by now; TRL hashed the whole state dict before sharding it.
        weights = getattr(trainer, "_precompute_model_hash", None)
        if weights is None:
            raise ValueError("ref_logps_cache= cannot hash a sharded reference model with this TRL version")
    else:
        weights = weights_digest(trainer.accelerator.unwrap_model(model))
    return {"weights": weights, "architecture": architecture_digest(trainer.accelerator.unwrap_model(model)),
            "training_mode": bool(model.training)}


def cache_key(trainer, dataset, batch_size: int, digests: list[bytes]) -> tuple[str, dict]:
    from .common import tokenizer_of

    if getattr(trainer, "_ref_cache_reference", None) is None:
        # Computed once, at the first precompute (in __init__, before any step): a later
        # ``evaluate()`` must see the reference, not a policy that has trained since.
        trainer._ref_cache_reference = reference_digest(trainer)
    args, accelerator = trainer.args, trainer.accelerator
    manifest = {
        "format": FORMAT,
        "reference": trainer._ref_cache_reference,
        "tokenizer": tokenizer_digest(tokenizer_of(trainer.processing_class)),
        "data": {"rows": len(digests), "columns": row_columns(dataset), "digest": _sha(b"".join(sorted(digests)))},
        "settings": {
            # The batch size sets which rows share a padded batch, and so the last bits.
            "batch_size": batch_size, "max_length": args.max_length, "truncation_mode": args.truncation_mode,
            "pad_to_multiple_of": args.pad_to_multiple_of, "padding_free": args.padding_free,
            "ld_alpha": args.ld_alpha, "disable_dropout": args.disable_dropout,
            "mixed_precision": str(accelerator.mixed_precision), "device": accelerator.device.type,
            "num_processes": accelerator.num_processes, "collator": _describe(trainer.data_collator),
        },
        "versions": _versions(),
    }
    return _sha(json.dumps(manifest, sort_keys=True, default=str))[:32], manifest


class RefLogpsCache:
    """A folder of precomputed reference log-probs, one pair of files per key."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser()

    def file(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def load(self, key: str, digests: list[bytes]):
        """(chosen, rejected) float32 arrays in the order of ``digests``, or None."""
        import numpy as np
        from safetensors.numpy import load_file

        path = self.file(key)
        try:
            stored = load_file(str(path))
            rows = [bytes(r) for r in stored["rows"]]
            chosen, rejected = stored["chosen"], stored["rejected"]
        except Exception as exc:  # unreadable or truncated: recompute rather than fail the run
            logger.warning("ignoring unreadable reference log-prob cache %s: %s", path, exc)
            return None
        if rows == digests:
            return chosen, rejected
        where = {d: i for i, d in enumerate(rows)}
        if len(rows) != len(digests) or any(d not in where for d in digests):
            logger.warning("reference log-prob cache %s does not match its key's rows; recomputing", path)
            return None
        order = np.fromiter((where[d] for d in digests), dtype=np.int64, count=len(digests))
        return chosen[order], rejected[order]

    def save(self, key: str, digests: list[bytes], chosen, rejected, manifest: dict) -> None:
        import numpy as np
        from safetensors.numpy import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        rows = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 16)
        tensors = {
            "chosen": np.ascontiguousarray(chosen, np.float32),
            "rejected": np.ascontiguousarray(rejected, np.float32),
            "rows": rows,
        }
        (self.folder / f"{key}.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        # Runs of a sweep may share the folder: a reader sees a whole file or none.
        tmp = self.folder / f".{key}.{os.getpid()}.tmp"
        save_file(tensors, str(tmp))
        os.chmod(tmp, 0o644)  # a run folder may be shared: readable like the checkpoints beside it
        os.replace(tmp, self.file(key))


def precompute_with_cache(trainer, cache: RefLogpsCache, dataset, name: str, batch_size: int, compute):
    """``dataset`` with the reference columns: loaded when the key's file exists, else
    ``compute(dataset, name, batch_size)`` (TRL's precompute) and saved."""
    import numpy as np
    from accelerate.utils import broadcast_object_list
    from datasets import Dataset, Features, Value, concatenate_datasets

    digests = row_digests(dataset)
    key, manifest = cache_key(trainer, dataset, batch_size, digests)
    main = trainer.accelerator.is_main_process
    loaded = cache.load(key, digests) if main and cache.file(key).exists() else None
    # Every process must take the same branch: a miss runs collective gathers.
    hit = [loaded is not None]
    broadcast_object_list(hit, from_process=0)
    if hit[0] and loaded is None:
        loaded = cache.load(key, digests)
        if loaded is None:
            raise FileNotFoundError(f"reference log-prob cache {cache.file(key)} is not readable on every process")
    info = {"key": key, "hit": hit[0], "file": str(cache.file(key))}
    trainer.ref_logps_cache_info[name] = info
    if hit[0]:
        logger.info("reference log-probs for the %s dataset loaded from %s", name, info["file"])
        chosen, rejected = loaded
        columns = Dataset.from_dict(
            {REF_COLUMNS[0]: chosen, REF_COLUMNS[1]: rejected},
            features=Features({c: Value("float32") for c in REF_COLUMNS}),
        )
        return concatenate_datasets([dataset, columns], axis=1)
    out = compute(dataset, name, batch_size)
    if main:
        table = out.select_columns(list(REF_COLUMNS)).with_format("numpy")
        cache.save(key, digests, np.asarray(table[REF_COLUMNS[0]]), np.asarray(table[REF_COLUMNS[1]]), manifest)
        logger.info("reference log-probs for the %s dataset saved to %s", name, info["file"])
    trainer.accelerator.wait_for_everyone()
    return out
