"""Built-in model and dataset loading (the fallback of the decision hooks)."""

from __future__ import annotations

from pathlib import Path

import trl_plus
from trl_plus.data.files import FILE_FORMATS, data_file_problem, file_format
from trl_plus.errors import DataError, RecipeError
from trl_plus.tiny import TINY_PREFIX, ensure_tiny

CAUSAL_ROLES = ("policy", "reference")
SCORE_ROLES = ("reward", "critic")
__all__ = ["FILE_FORMATS", "trl_plus_load_dataset", "trl_plus_load_model"]


@trl_plus.hookimpl(trylast=True)
def trl_plus_load_model(name_or_path: str, role: str, init_kwargs: dict):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if name_or_path.startswith(TINY_PREFIX):
        name_or_path = str(ensure_tiny(name_or_path))
    else:
        # A local folder that holds no model (or an adapter whose base is missing) is said
        # here: transformers would take its path for a hub id and blame the hub.
        from trl_plus.model_refs import hub_cached, hub_offline, local_path, model_folder_problem

        folder = local_path(name_or_path)
        if folder is not None:
            problem = f"no such model folder: {name_or_path!r}" if not folder.exists() else model_folder_problem(folder)
            if problem:
                raise RecipeError(f"cannot load the {role} model: {problem}")
        elif hub_offline() and not hub_cached(name_or_path):
            raise RecipeError(f"cannot load the {role} model: hub model {name_or_path!r} is not in the local cache "
                              "and the hub is offline (HF_HUB_OFFLINE=1); download it first, or give a local folder")
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
    if local.is_file():
        # A data file: its suffix names its format (compressed text too); what datasets
        # would misread without a word (a header naming a column twice, bytes that are
        # not UTF-8) or misreport (an unknown suffix: "no data file found") is said here.
        problem = data_file_problem(local)
        if problem is not None:
            raise DataError(problem)
        builder, options = file_format(local)
        try:
            return datasets.load_dataset(builder, data_files=str(local), split="train", **options)
        except Exception as exc:
            raise DataError(f"could not load data file {path!r}: {type(exc).__name__}: {exc}") from exc
    try:
        if local.is_dir() and (local / "dataset_info.json").exists():
            return datasets.load_from_disk(str(local))
        if local.is_dir() and (local / "dataset_dict.json").exists():
            return datasets.load_from_disk(str(local))[split]
        return datasets.load_dataset(path, spec.get("name"), split=split, data_files=spec.get("data_files"))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"could not load dataset {path!r} (split {split!r}): {exc}") from exc
    except Exception as exc:  # hub or network errors, offline mode
        raise DataError(f"could not load dataset {path!r} (split {split!r}): {type(exc).__name__}: {exc}") from exc
