"""The stages before the policies: corpus, sft, pairs, reward.

Each function takes the pipeline context, runs one step into its folder of the run
folder (skipped when the folder's ``done.json`` matches) and returns the folder. Models
and tokenizers load through the context (``trl_plus.loading`` and the
``trl_plus_load_model`` hook), as the trainers load theirs.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path

from ..errors import DataError
from .layout import HELDOUT_SCORES, TEST_PROMPTS, VAL_PROMPTS, fingerprint, read_jsonl, write_json, write_jsonl

# Tiny models trained from scratch want far higher rates than TRL's defaults (1e-6, for
# pretrained LLMs); these are the quickstart's measured ones.
SFT_DEFAULTS = dict(
    learning_rate=3e-3, num_train_epochs=1, per_device_train_batch_size=64, max_length=64,
    lr_scheduler_type="cosine", warmup_steps=20, logging_steps=10, weight_decay=0.0,
)
REWARD_DEFAULTS = dict(
    learning_rate=1e-3, num_train_epochs=2, per_device_train_batch_size=64, max_length=64,
    lr_scheduler_type="cosine", logging_steps=5, weight_decay=0.0,
)


def _common_args(args: dict) -> dict:
    return {"report_to": "none", "bf16": False, "save_strategy": "no", "disable_tqdm": True, **args}


def run_corpus(ctx) -> Path:
    cfg = ctx.config.stages.corpus
    fp = fingerprint("corpus", cfg.model_dump())
    if ctx.skip("corpus", fp, settings=cfg.model_dump()):
        return ctx.run.path("corpus")
    from .corpus import make_corpus, make_eval_prompts, make_prompts

    with ctx.run.step("corpus", fp) as (folder, info), ctx.bar("corpus", 3) as bar:
        texts = make_corpus(cfg.reviews, cfg.seed)
        write_jsonl(folder / "train.jsonl", ({"text": t} for t in texts))
        bar.update(1)
        write_jsonl(folder / "prompts.jsonl", ({"prompt": p} for p in make_prompts(cfg.prompts, cfg.seed + 1)))
        bar.update(1)
        # Held-out openings that neither the corpus nor the training prompts contain:
        # validation chooses the frontier's checkpoints, test reports them.
        val, test = make_eval_prompts(cfg.val_prompts, cfg.eval_prompts, cfg.seed + 2)
        write_jsonl(folder / VAL_PROMPTS, ({"prompt": p} for p in val))
        write_jsonl(folder / TEST_PROMPTS, ({"prompt": p} for p in test))
        bar.update(1)
        info.update(reviews=len(texts), prompts=cfg.prompts, val_prompts=len(val), eval_prompts=len(test))
    return folder


def run_sft(ctx) -> Path:
    cfg = ctx.config.stages.sft
    inputs = ctx.inputs(cfg.model_dump())  # a base model folder: replaced, the stage is redone
    fp = fingerprint("sft", cfg.model_dump(), ctx.fingerprints.get("corpus"), *([inputs] if inputs else []))
    if ctx.skip("sft", fp, settings=cfg.model_dump(), upstream={"corpus": ctx.fingerprints.get("corpus")}, inputs=inputs):
        return ctx.run.path("sft")
    import datasets
    from trl import SFTConfig, SFTTrainer

    from ..tiny import build_model, build_tokenizer

    with ctx.run.step("sft", fp) as (folder, info):
        texts = None
        if ctx.config.stages.corpus is not None:
            texts = [r["text"] for r in read_jsonl(ctx.run.path("corpus", "train.jsonl"))]
        if cfg.base is None:
            tokenizer = build_tokenizer(texts, vocab_size=ctx.config.stages.corpus.vocab_size)
            shape = cfg.model
            model = build_model("causal-lm", tokenizer, seed=ctx.config.stages.corpus.seed, hidden_size=shape.hidden_size,
                                num_layers=shape.num_layers, num_heads=shape.num_heads, max_len=shape.max_len)
        else:
            tokenizer = ctx.load_tokenizer(cfg.base, "stages.sft.base")
            model = ctx.load_model(cfg.base, "policy", "stages.sft.base")
        tokens = 0
        if cfg.train and texts:
            args = SFTConfig(output_dir=str(folder), **_common_args({**SFT_DEFAULTS, **cfg.args}))
            trainer = SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict({"text": texts}),
                                 processing_class=tokenizer)
            ctx.attach_bar(trainer, "sft")
            trainer.train()
            trainer.save_state()
            tokens = int(sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * args.num_train_epochs)
            info["final_loss"] = trainer.state.log_history[-1].get("train_loss")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        info["tokens"] = tokens
    return folder


def _gold(ctx):
    return ctx.hooks.components().reward_mix(ctx.config.gold, ctx.config.gold_key)


def run_pairs(ctx) -> Path:
    cfg = ctx.config.stages.pairs
    inputs = ctx.inputs(cfg.model_dump(), ctx.config.gold)  # the preference file, prompts, gold reward model
    fp = fingerprint("pairs", cfg.model_dump(), ctx.config.gold, ctx.fingerprints.get("sft"), ctx.fingerprints.get("corpus"),
                     *([inputs] if inputs else []))
    if ctx.skip("pairs", fp, settings={**cfg.model_dump(), "gold": ctx.config.gold},
                upstream={k: ctx.fingerprints.get(k) for k in ("sft", "corpus")}, inputs=inputs):
        return ctx.run.path("pairs")
    with ctx.run.step("pairs", fp) as (folder, info):
        if cfg.dataset is not None:
            rows = _load_pairs(ctx, cfg.dataset)
            tokens = 0
        else:
            rows, tokens = _sample_pairs(ctx, cfg)
        if not rows:
            raise DataError("the pairs stage produced no pair with distinct gold rewards; sample more completions")
        write_jsonl(folder / "pairs.jsonl", rows)
        # PPO's prompts: the corpus' training prompts, or those of the given pairs.
        prompts = sorted({r["prompt"] for r in rows})
        write_jsonl(folder / "prompts.jsonl", ({"prompt": p} for p in prompts))
        margins = [r["chosen_reward"] - r["rejected_reward"] for r in rows if "chosen_reward" in r]
        gold = [v for r in rows for v in (r.get("chosen_reward"), r.get("rejected_reward")) if v is not None]
        info.update(pairs=len(rows), tokens=tokens,
                    mean_margin=statistics.fmean(margins) if margins else None,
                    gold_std=statistics.pstdev(gold) if len(gold) > 1 else None)
    return folder


def _load_pairs(ctx, spec: str) -> list[dict]:
    from ..data.splits import require_columns

    dataset = ctx.hooks.load_dataset({"path": spec, "split": "train"})
    require_columns(dataset, ["prompt", "chosen", "rejected"], "stages.pairs.dataset")
    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in dataset]
    # The gold reward's view of the given labels: the report's margin distribution and the
    # reward model's agreement with gold need it. Training still uses the labels as given.
    gold = _gold(ctx)
    prompts = [r["prompt"] for r in rows]
    for r, c, j in zip(rows, gold(prompts, [r["chosen"] for r in rows]), gold(prompts, [r["rejected"] for r in rows])):
        r["chosen_reward"], r["rejected_reward"] = c, j
    return rows


def _sample_pairs(ctx, cfg) -> tuple[list[dict], int]:
    from .sampling import best_worst_pairs, sample

    if cfg.prompts is not None:
        from ..eval import load_prompts

        prompts = load_prompts(cfg.prompts, max_prompts=cfg.max_prompts, hooks=ctx.hooks,
                               base_dir=ctx.recipe.base_dir).prompts
    else:
        prompts = [r["prompt"] for r in read_jsonl(ctx.run.path("corpus", "prompts.jsonl"))]
    # the SFT model samples the completions: loaded as the policy it is
    model, tokenizer = ctx.load_model(ctx.run.path("sft"), "policy").eval(), ctx.load_tokenizer(ctx.run.path("sft"))
    k = cfg.samples_per_prompt
    gold = _gold(ctx)
    samples, scores, tokens = [], [], 0
    with ctx.bar("pairs", len(prompts) * k) as bar:
        for j in range(k):
            texts, n = sample(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              batch_size=cfg.batch_size, seed=1000 + j, progress=bar)
            samples.append(texts)
            scores.append(gold(prompts, texts))
            tokens += n
    rows = best_worst_pairs(prompts, [[samples[j][i] for j in range(k)] for i in range(len(prompts))],
                            [[scores[j][i] for j in range(k)] for i in range(len(prompts))], cfg.min_margin)
    return rows, tokens


def run_reward(ctx) -> Path:
    cfg = ctx.config.stages.reward
    fp = fingerprint("reward", cfg.model_dump(), ctx.fingerprints.get("pairs"))
    if ctx.skip("reward", fp, settings=cfg.model_dump(), upstream={"pairs": ctx.fingerprints.get("pairs")}):
        return ctx.run.path("reward")
    import datasets
    from trl import RewardConfig, RewardTrainer

    sft = str(ctx.run.path("sft"))
    with ctx.run.step("reward", fp) as (folder, info):
        rows = read_jsonl(ctx.run.path("pairs", "pairs.jsonl"))
        # A seeded permutation in Python, so the held-out pairs are known by index: the
        # reward model's accuracy against gold is measured on pairs it never trained on.
        order = list(range(len(rows)))
        random.Random(0).shuffle(order)
        n_eval = int(len(rows) * cfg.eval_fraction)
        held_rows = [rows[i] for i in order[:n_eval]]
        train_rows = [rows[i] for i in order[n_eval:]]

        # Implicit-prompt form (prompt + completion in one text): RewardTrainer appends EOS,
        # and the reward_model source scores with append_eos=True, so both see one form.
        def pair_data(part):
            return datasets.Dataset.from_dict({"chosen": [r["prompt"] + r["chosen"] for r in part],
                                               "rejected": [r["prompt"] + r["rejected"] for r in part]})

        train, held = pair_data(train_rows), pair_data(held_rows)
        # the SFT model with a one-label score head: the reward role of the model-loading hook
        tokenizer = ctx.load_tokenizer(sft)
        model = ctx.load_model(sft, "reward")
        model.config.pad_token_id = tokenizer.pad_token_id  # sequence classification pools at the last non-pad
        args = RewardConfig(output_dir=str(folder), **_common_args({**REWARD_DEFAULTS, **cfg.args}))
        trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                                eval_dataset=held if n_eval else None)
        ctx.attach_bar(trainer, "reward")
        trainer.train()
        trainer.save_state()
        trainer.save_model(str(folder))
        tokenizer.save_pretrained(folder)
        info["tokens"] = _pair_tokens(trainer.train_dataset, args.num_train_epochs)
        # Accuracy and scale on held-out pairs, scored exactly as PPO will score.
        scale = _rm_scale(ctx, folder, held_rows or train_rows[:512])
        info.update(scale)
    return folder


def _pair_tokens(dataset, epochs: float) -> int | None:
    names = dataset.column_names
    pair = [c for c in ("chosen_ids", "rejected_ids", "chosen_input_ids", "rejected_input_ids") if c in names]
    if not pair:
        return None
    return int(sum(len(ids) for c in pair for ids in dataset[c]) * epochs)


def _rm_scale(ctx, folder: Path, rows: list[dict]) -> dict:
    """Pair accuracy of the RM on held-out pairs (against the order the pairs stage gave
    them and against the gold reward), and the weight that brings its spread to the gold
    reward's. The scores are kept for the report's preference-data section."""
    spec = {"name": "reward_model", "model": str(folder), "append_eos": True, "batch_size": 128}
    rm = ctx.hooks.components().reward_mix([spec])
    prompts = [r["prompt"] for r in rows]
    chosen = rm(prompts, [r["chosen"] for r in rows])
    rejected = rm(prompts, [r["rejected"] for r in rows])
    accuracy = statistics.fmean(float(c > r) for c, r in zip(chosen, rejected)) if rows else None
    rm_std = statistics.pstdev(chosen + rejected) if len(rows) > 1 else 0.0
    rm_std = rm_std or 1.0
    gold = [v for r in rows for v in (r.get("chosen_reward"), r.get("rejected_reward")) if v is not None]
    gold_std = statistics.pstdev(gold) if len(gold) > 1 else 1.0
    weight = gold_std / rm_std if ctx.config.stages.reward.normalize else 1.0
    write_json(folder / HELDOUT_SCORES, {
        "rm_chosen": chosen, "rm_rejected": rejected,
        "gold_chosen": [r.get("chosen_reward") for r in rows], "gold_rejected": [r.get("rejected_reward") for r in rows],
    })
    return {"pair_accuracy": None if accuracy is None else round(accuracy, 4), "heldout_pairs": len(rows),
            "rm_std": rm_std, "gold_std": gold_std, "weight": weight}
