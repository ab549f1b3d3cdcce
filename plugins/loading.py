"""Built-in model and dataset loading (the fallback of the decision hooks)."""

from __future__ import annotations

from pathlib import Path

import trl_plus
from trl_plus.errors import DataError, RecipeError
from trl_plus.tiny import TINY_PREFIX, ensure_tiny

CAUSAL_ROLES = ("policy", "reference")
SCORE_ROLES = ("reward", "critic")
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


@trl_plus.hookimpl(trylast=True)
def trl_plus_load_model(name_or_path: str, role: str, init_kwargs: dict):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if name_or_path.startswith(TINY_PREFIX):
        name_or_path = str(ensure_tiny(name_or_path))
    if role in CAUSAL_ROLES:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **init_kwargs)
    if role in SCORE_ROLES:
        return AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=1, **init_kwargs)
    raise RecipeError(f"unknown model role {role!r}; allowed: {', '.join(CAUSAL_ROLES + SCORE_ROLES)}")


@trl_plus.hookimpl(trylast=True)
def trl_plus_load_dataset(spec: dict):
    import datasets

    path = spec["path"]
    split = spec.get("split") or "train"
    local = Path(path)
    try:
        if local.suffix in FILE_FORMATS and local.is_file():
            return datasets.load_dataset(FILE_FORMATS[local.suffix], data_files=str(local), split="train")
        if local.is_dir() and (local / "dataset_info.json").exists():
            return datasets.load_from_disk(str(local))
        if local.is_dir() and (local / "dataset_dict.json").exists():
            return datasets.load_from_disk(str(local))[split]
        return datasets.load_dataset(path, spec.get("name"), split=split, data_files=spec.get("data_files"))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"could not load dataset {path!r} (split {split!r}): {exc}") from exc
    except Exception as exc:  # hub or network errors, offline mode
        raise DataError(f"could not load dataset {path!r} (split {split!r}): {type(exc).__name__}: {exc}") from exc
