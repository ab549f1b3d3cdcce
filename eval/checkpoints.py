"""Checkpoints as evaluation loads them: a :class:`Policy` (model, tokenizer and a cache id),
and the id itself, a hash of the weights and config, so the same weights get the same id
(hence the same sampling seeds and cache rows) wherever they lie.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl_plus.errors import DataError, RecipeError


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

    from trl_plus.model_refs import check_model_name
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
    from trl_plus.loading import pad_with_eos

    return pad_with_eos(tokenizer, required=True)
