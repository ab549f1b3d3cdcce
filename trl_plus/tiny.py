"""Tiny models and tokenizers built from scratch, offline, in seconds.

They stand in for hub models in tests, in ``tiny-*`` recipes and in the quickstart:
a recipe names them as ``tiny:causal-lm`` or ``tiny:reward-model``. Everything is
deterministic (fixed seed, fixed corpus), and built once per cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

TINY_PREFIX = "tiny:"
TINY_KINDS = ("causal-lm", "reward-model")

# Enough English to give a byte-level BPE useful merges for the shipped toy data.
_BASE_CORPUS = """
the movie was great . the movie was awful . i loved it . i hated it .
this film is wonderful and moving . this film is boring and dull .
what a gem . what a mess . the acting was superb . the acting was terrible .
the story is good , the music is nice , the ending is bad , the plot is weak .
review : prompt : answer : question : yes no maybe . a b c d e f g h i j k l m n o p
q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 happy sad positive negative fine poor best worst
""".strip()

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def cache_dir() -> Path:
    root = os.environ.get("TRL_PLUS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "trl_plus")
    return Path(root)


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on ``corpus`` (any text still encodes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) if corpus is not None else _BASE_CORPUS.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.model_max_length = 512
    return fast


def model_config(kind: str, tokenizer, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, max_len: int = 256):
    from transformers import LlamaConfig

    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {', '.join(TINY_KINDS)}")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_len,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        num_labels=1,
    )


def build_model(kind: str, tokenizer, seed: int = 0, **config_kwargs):
    """A randomly initialised tiny Llama: a causal LM or a one-label reward model."""
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    config = model_config(kind, tokenizer, **config_kwargs)
    torch.manual_seed(seed)
    cls = LlamaForCausalLM if kind == "causal-lm" else LlamaForSequenceClassification
    model = cls(config)
    if kind == "causal-lm":
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def save_tiny(path: str | Path, kind: str = "causal-lm", seed: int = 0, corpus: Iterable[str] | None = None,
              **config_kwargs) -> Path:
    """Build a tiny model and its tokenizer and save both to ``path`` (loadable by path);
    ``config_kwargs`` (``hidden_size``, ``num_layers``, ...) go to :func:`model_config`."""
    path = Path(path)
    tokenizer = build_tokenizer(corpus)
    model = build_model(kind, tokenizer, seed=seed, **config_kwargs)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def ensure_tiny(name: str, seed: int = 0) -> Path:
    """The local folder of ``tiny:<kind>``, built on first use into the cache."""
    kind = name[len(TINY_PREFIX) :] if name.startswith(TINY_PREFIX) else name
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model {name!r}; choose one of {', '.join(TINY_PREFIX + k for k in TINY_KINDS)}")
    import transformers

    key = hashlib.sha256(json.dumps([kind, seed, _BASE_CORPUS, transformers.__version__]).encode()).hexdigest()[:12]
    path = cache_dir() / f"tiny-{kind}-{key}"
    if not (path / "config.json").exists():
        import shutil

        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_tiny(tmp, kind, seed)
        if not (tmp / "config.json").exists():
            # Under torch.distributed only rank 0's save_pretrained writes the weights: wait for its folder.
            shutil.rmtree(tmp, ignore_errors=True)
            _wait_for(path / "config.json")
            return path
        try:
            tmp.rename(path)
        except OSError:  # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _wait_for(marker: Path, timeout: float = 600.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not marker.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the tiny model {marker.parent} was not built by rank 0 within {timeout:.0f} s")
        time.sleep(0.2)


def resolve(name_or_path: str) -> str:
    """A model name with ``tiny:<kind>`` replaced by its local folder."""
    return str(ensure_tiny(name_or_path)) if name_or_path.startswith(TINY_PREFIX) else name_or_path
