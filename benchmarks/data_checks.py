"""What trl-plus's data checks and filters cost, against TRL's own tokenisation of the data.

On a generated preference dataset (``--rows``, default 200,000; prompts and completions cut
from the review corpus of ``trl_plus.pipeline.corpus``) and the tiny offline tokenizer:

- ours: what ``trl_plus.DPOTrainer`` runs around TRL's preparation, a fresh filter chain
  each repeat: before it, ``trl_plus.data_checks.prepare_dataset`` (the row checks of
  prompt/chosen/rejected over Arrow batches, and the text filters of the shipped
  ``tiny-dpo`` recipe, distinct_pair and dedup); after it,
  ``trl_plus.data_checks.filter_token_ids`` (the length filter, on the lengths of TRL's
  token ids). ``--filters text`` leaves out the length filter, ``--filters none`` runs
  the checks alone. TRL's tokenisation of all rows, which the token stage reads, is done
  once beforehand and not timed (it is TRL's work, which the trainer does anyway);
- TRL: ``trl.DPOTrainer._prepare_dataset`` (prompt handling, EOS, the tokenize map, the
  truncation filter), one epoch's tokenisation, on the first ``--tokenize-rows`` rows
  (default 20,000: 200,000 take minutes per repeat on a shared 2-core machine), its time
  scaled linearly to ``--rows``.

The two alternate (``benchmarks/_timing.py``, 7 repeats, one thread). The last line is
ours / TRL's scaled time: the share of one epoch's tokenisation the checks cost.

    python benchmarks/data_checks.py
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved, pin_threads  # noqa: E402

# The shipped tiny-dpo recipe's filters, the length bounds set at about the 99th
# percentile of this data (a length filter that drops outliers).
FILTERS = {
    "none": [],
    "text": [{"name": "distinct_pair"}, {"name": "dedup"}],
    "recipe": [{"name": "distinct_pair"}, {"name": "dedup"},
               {"name": "length", "max_prompt_tokens": 16, "max_completion_tokens": 80}],
}


def make_rows(n: int, seed: int = 0) -> dict[str, list[str]]:
    from trl_plus.pipeline.corpus import make_corpus

    rng = random.Random(seed)
    reviews = [r.split() for r in make_corpus(max(n // 4, 1000), seed=seed)]
    prompts, chosen, rejected = [], [], []
    for _ in range(n):
        a, b = rng.choice(reviews), rng.choice(reviews)
        cut = min(4, len(a) - 1)
        prompts.append(" ".join(a[:cut]))
        chosen.append(" " + " ".join(a[cut:]))
        rejected.append(" " + " ".join(b[min(4, len(b) - 1) :]))
    return {"prompt": prompts, "chosen": chosen, "rejected": rejected}


class _TrlShim:
    """What ``trl.DPOTrainer._prepare_dataset`` reads from its trainer."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--tokenize-rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--filters", choices=tuple(FILTERS), default="recipe",
                        help="recipe: distinct_pair, dedup, length; text: the two that do not tokenise; none: checks only")
    args = parser.parse_args(argv)
    pin_threads(args.threads)

    import datasets
    import trl
    from transformers import AutoTokenizer

    from trl_plus.data.prepare import filter_token_ids, prepare_dataset
    from trl_plus.manager import Hooks, get_plugin_manager
    from trl_plus.tiny import ensure_tiny

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny("tiny:causal-lm"))
    data = datasets.Dataset.from_dict(make_rows(args.rows))
    subset = data.select(range(min(args.tokenize_rows, args.rows)))
    scale = len(data) / len(subset)
    hooks = Hooks(get_plugin_manager(autoload=False, blocked=[]))
    specs = FILTERS[args.filters]
    config = trl.DPOConfig(output_dir=tempfile.mkdtemp(), max_length=128, bf16=False, report_to="none")
    shim = _TrlShim(tokenizer)
    columns = ("prompt", "chosen", "rejected")
    token_columns = {"prompt": "prompt_ids", "chosen": "chosen_ids", "rejected": "rejected_ids"}

    def text_stage():
        chain = hooks.components(tokenizer=tokenizer).filter_chain(specs)
        chain.defer_to_token_ids()
        reports: dict = {}
        return chain, reports, prepare_dataset(data, columns, "train", chain, reports=reports)

    # TRL's tokenisation of what the text stage keeps: the token stage's input (untimed).
    started = time.perf_counter()
    chain, _, tokenised = text_stage()
    if chain.deferred:
        tokenised = trl.DPOTrainer._prepare_dataset(shim, tokenised, tokenizer, config, "train")
    trl_all_s = time.perf_counter() - started

    def ours():
        chain, reports, _ = text_stage()
        kept = filter_token_ids(tokenised, "train", chain, token_columns, text_columns=columns, reports=reports)
        return len(kept), reports["train"]

    def theirs():
        return len(trl.DPOTrainer._prepare_dataset(shim, subset, tokenizer, config, "train"))

    result = interleaved(ours, theirs, args.repeats)
    kept, report = result["ours"]
    trl_epoch = result["theirs_s"] * scale
    # Per repeat: ours / (theirs x scale) = 1 / (ratio x scale): the median of those, and
    # their IQR (which flips with the inverse).
    share = 1 / (result["ratio"] * scale)
    low, high = (1 / (r * scale) for r in result["ratio_iqr"][::-1])
    print(f"rows {len(data)}, kept {kept} by checks + filters {[f['name'] for f in report['filters']] or 'none'}")
    print(f"drops: {[(f['name'], f['dropped']) for f in report['filters']]}, checks: invalid {report['checks']['invalid_rows']}, "
          f"empty {report['checks']['empty']}")
    print(f"ours (checks + filters, {len(data)} rows): {result['ours_s']:.2f} s (median of {result['repeats']})")
    print(f"TRL _prepare_dataset ({len(subset)} rows): {result['theirs_s']:.2f} s -> {trl_epoch:.1f} s for {len(data)} rows "
          f"(x{scale:g}, linear); once over all {len(tokenised)} rows kept by the text stage, untimed above: {trl_all_s:.1f} s")
    print(f"share of one epoch's TRL tokenisation: {share:.4f} (median of per-repeat shares, IQR {low:.4f}-{high:.4f})")


if __name__ == "__main__":
    main()
