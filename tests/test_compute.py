"""Compute per checkpoint: what the counter records (tokens trained and generated, passes,
FLOPs, wall time) against independent counts on tiny DPO and PPO runs, across checkpoints
and a resume; and the report's gold reward against compute on synthetic run folders
(a method that wins at matched KL and loses at matched compute, a method without records)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import trl

import trl_plus
from trl_plus.run_folder.compute import COMPUTE_FILE, FLOPS_FORMULA, estimate_flops, read_compute

# ---------------------------------------------------------------------------------------
# the record
# ---------------------------------------------------------------------------------------


def test_flops_are_six_n_per_trained_token_and_two_n_per_generated_token():
    assert estimate_flops(1000, trained_tokens=50, generated_tokens=20) == 6 * 1000 * 50 + 2 * 1000 * 20
    # a critic trained on the same tokens adds its parameters to the trained part only
    assert estimate_flops(1000, 50, 20, critic_parameters=400) == 6 * 1400 * 50 + 2 * 1000 * 20
    assert estimate_flops(7, 0, 0) == 0.0
    assert "6 * (parameters + critic_parameters) * trained_tokens" in FLOPS_FORMULA


def test_a_folder_without_a_valid_record_has_none(tmp_path):
    assert read_compute(tmp_path) is None and read_compute(None) is None
    (tmp_path / COMPUTE_FILE).write_text("{not json")
    assert read_compute(tmp_path) is None
    (tmp_path / COMPUTE_FILE).write_text(json.dumps({"trained_tokens": 5}))  # counts missing
    assert read_compute(tmp_path) is None
    record = {"generated_tokens": 0, "trained_tokens": 5, "forward_passes": 1, "backward_passes": 1, "flops": 30.0,
              "wall_time_s": 0.1, "counted_from_step": 0}
    (tmp_path / COMPUTE_FILE).write_text(json.dumps(record))
    assert read_compute(tmp_path)["complete"] is True
    (tmp_path / COMPUTE_FILE).write_text(json.dumps({**record, "counted_from_step": 4}))
    assert read_compute(tmp_path)["complete"] is False


# ---------------------------------------------------------------------------------------
# the counter on tiny runs
# ---------------------------------------------------------------------------------------


def _dpo(tmp_path, model_path, name, rows=32, **kw):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_plus.testing import preference_rows

    args = trl.DPOConfig(**{**dict(
        output_dir=str(tmp_path / name), per_device_train_batch_size=8, num_train_epochs=2, learning_rate=1e-3,
        bf16=False, report_to="none", logging_steps=1, save_strategy="steps", save_steps=3, max_length=64, seed=0,
        disable_tqdm=True), **kw})
    return trl_plus.DPOTrainer(
        AutoModelForCausalLM.from_pretrained(model_path), AutoModelForCausalLM.from_pretrained(model_path), args=args,
        train_dataset=Dataset.from_list(preference_rows()[:rows]), processing_class=AutoTokenizer.from_pretrained(model_path))


def _mask_spy(module) -> dict:
    """An independent count: the attention mask of every call of ``module`` that trains."""
    seen = {"tokens": 0, "calls": 0}

    def pre(mod, args, kwargs):
        if torch.is_grad_enabled() and mod.training:
            seen["tokens"] += int(kwargs["attention_mask"].sum())
            seen["calls"] += 1

    module.register_forward_pre_hook(pre, with_kwargs=True)
    return seen


def _records(folder) -> dict[int, dict]:
    found = {int(p.name.split("-")[1]): read_compute(p) for p in folder.glob("checkpoint-*")}
    return dict(sorted(found.items()))


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, tiny_model_path):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("dpo")
    trainer = _dpo(tmp, tiny_model_path, "full")
    spy = _mask_spy(trainer.model)
    trainer.train()
    trainer.save_model()
    return tmp, trainer, spy


def test_dpo_trained_tokens_are_the_attention_masks_it_saw(dpo_run):
    tmp, trainer, spy = dpo_run
    records = _records(tmp / "full")
    final = read_compute(tmp / "full")
    assert list(records) == [3, 6, 8]
    # the masks the policy was called with while training, counted by a hook of the test's own
    assert final["trained_tokens"] == spy["tokens"] and final["backward_passes"] == spy["calls"] == 8
    # and from the tokenised rows: each row is prompt + chosen and prompt + rejected, two epochs
    rows = trainer.train_dataset
    per_epoch = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    assert final["trained_tokens"] == 2 * per_epoch
    assert final["generated_tokens"] == 0  # DPO samples nothing
    assert final["forward_passes"] == 16  # the policy and the reference, once per batch
    n = sum(p.numel() for p in trainer.model.parameters())
    assert final["parameters"] == n and final["critic_parameters"] == 0
    assert final["flops"] == pytest.approx(6 * n * final["trained_tokens"])
    assert final["step"] == 8 and final["counted_from_step"] == 0 and final["complete"]
    assert records[8] == {**final, "wall_time_s": records[8]["wall_time_s"]}  # the last checkpoint holds the same counts


def test_counts_grow_over_checkpoints(dpo_run):
    tmp, _, _ = dpo_run
    records = list(_records(tmp / "full").values())
    for key in ("trained_tokens", "backward_passes", "forward_passes", "flops", "wall_time_s"):
        values = [r[key] for r in records]
        assert all(b > a for a, b in zip(values, values[1:])), (key, values)
    assert [r["backward_passes"] for r in records] == [3, 6, 8]


def test_a_resumed_run_continues_from_the_checkpoints_counts(dpo_run, tiny_model_path):
    tmp, _, _ = dpo_run
    full = _records(tmp / "full")
    for name, keep_record in (("resumed", True), ("resumed-without-record", False)):
        out = tmp / name
        out.mkdir()
        shutil.copytree(tmp / "full" / "checkpoint-3", out / "checkpoint-3")
        if not keep_record:
            (out / "checkpoint-3" / COMPUTE_FILE).unlink()
        trainer = _dpo(tmp, tiny_model_path, name)
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-3"))
        after = _records(out)
        if keep_record:  # the same counts as the run that was never stopped
            for step in (6, 8):
                for key in ("trained_tokens", "backward_passes", "forward_passes", "generated_tokens", "flops"):
                    assert after[step][key] == full[step][key], (step, key)
                assert after[step]["wall_time_s"] > full[3]["wall_time_s"] and after[step]["complete"]
        else:  # counted from the checkpoint on, and marked so: never passed off as the whole run's
            assert after[8]["counted_from_step"] == 3 and not after[8]["complete"]
            assert after[8]["trained_tokens"] == full[8]["trained_tokens"] - full[3]["trained_tokens"]


def test_ppo_counts_the_tokens_its_rollouts_sample(tmp_path, tiny_model_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_ppo_trainer import make_trainer

    torch.set_num_threads(1)
    trainer = make_trainer(tmp_path, tiny_model_path, steps=4, save_strategy="steps", save_steps=2)
    sampled = {"tokens": 0}
    rollout = trainer._generate_and_score_completions

    def counted(inputs):  # an independent count: the completion mask of every training rollout
        out = rollout(inputs)
        if trainer.model.training:
            sampled["tokens"] += int(out["completion_mask"].sum())
        return out

    trainer._generate_and_score_completions = counted
    spy = _mask_spy(trainer.model)
    trainer.train()
    records = _records(tmp_path / "run-0")
    assert list(records) == [2, 4]
    last = records[4]
    assert last["generated_tokens"] == sampled["tokens"] > 0
    assert last["trained_tokens"] == spy["tokens"] and last["backward_passes"] == spy["calls"] == 4
    assert records[2]["generated_tokens"] < last["generated_tokens"]
    # the critic trains on the same tokens: its parameters count with the policy's there
    n, c = last["parameters"], last["critic_parameters"]
    assert c == sum(p.numel() for p in trainer.critic.parameters()) > 0
    assert last["flops"] == pytest.approx(estimate_flops(n, last["trained_tokens"], last["generated_tokens"], c))


class _PlainDPO(trl.DPOTrainer):
    """A third party's trainer that knows nothing of trl-plus's counter."""

    def __init__(self, model, ref_model=None, *, rewards=None, kl=None, filters=None, plugin_manager=None, recipe=None,
                 load_reports=None, **kwargs):
        super().__init__(model, ref_model, **kwargs)


class _PlainPlugin:
    @trl_plus.hookimpl
    def trl_plus_register_trainer_kinds(self, register):
        from trl_plus.trainers.kinds import DPO

        register.add("plain-dpo", dataclasses.replace(
            DPO, name="plain-dpo", load=lambda: (_PlainDPO, trl_plus.DPOConfig), description="TRL's DPO"))


def test_train_from_recipe_gives_every_kind_the_counter_once(tmp_path, register_plugin, plugin_manager):
    from trl_plus.recipe import shipped_recipes, validate_dict
    from trl_plus.trainers.compute import ComputeCounter
    from trl_plus.trainers.from_recipe import train_from_recipe

    torch.set_num_threads(1)
    register_plugin(_PlainPlugin(), name="plain_dpo")
    data = shipped_recipes()["tiny-dpo"].parent / "data" / "tiny_prefs.jsonl"
    for kind in ("plain-dpo", "dpo"):  # one that does not attach it itself, one that does
        section = {"max_steps": 4, "per_device_train_batch_size": 8, "max_length": 64, "save_strategy": "steps",
                   "save_steps": 2, "disable_tqdm": True, "report_to": "none"}
        recipe = validate_dict({"trainer": kind, "model": {"name_or_path": "tiny:causal-lm"},
                                "data": {"train": {"path": str(data)}}, kind: section}, plugin_manager)
        out = tmp_path / kind
        trainer = train_from_recipe(recipe, str(out), hooks=plugin_manager)
        assert sum(isinstance(cb, ComputeCounter) for cb in trainer.callback_handler.callbacks) == 1
        records = _records(out)
        assert list(records) == [2, 4] and records[2]["trained_tokens"] < records[4]["trained_tokens"]
        assert read_compute(out)["trained_tokens"] == records[4]["trained_tokens"]


# ---------------------------------------------------------------------------------------
# the report: gold reward against compute
# ---------------------------------------------------------------------------------------

N_TEST = 120
DPO_KL, PPO_KL = (0.3, 0.6, 1.1), (0.5, 0.95, 1.6)
# DPO spends more compute per checkpoint than PPO: its gold per FLOP is the lower one
DPO_FLOPS, PPO_FLOPS = (1.5e12, 3e12, 6e12), (1e12, 1.5e12, 2e12)


def _gold(method, seed, kl):
    """At every KL, DPO's gold reward lies 0.05 above PPO's; each seed has its own offset."""
    return 0.5 * np.sqrt(kl) + (0.05 if method == "dpo" else 0.0) + {0: 0.01, 1: -0.01, 2: 0.0}[seed]


def _point(root, rng, method, seed, step, kl, gold, flops=None, final=False):
    from trl_plus.pipeline.layout import write_json

    run = "sft" if method == "sft" else f"{method}/{'beta' if method == 'dpo' else 'kl_coef'}0.1-seed{seed}"
    pid = "sft" if method == "sft" else f"{run}/step-{step}"
    folder = root / "eval" / pid
    test = [float(v) for v in rng.normal(gold, 0.1, N_TEST)]
    point = {"id": pid, "method": method, "seed": seed, "run": run, "strength": 0.1, "final": final, "step": step,
             "strength_key": None if method == "sft" else ("beta" if method == "dpo" else "kl_coef"),
             "path": str(root / run / f"checkpoint-{step}")}
    write_json(folder / "eval.json", {"prompts": {"count": N_TEST}, "kl": None if method == "sft" else {"kl": kl},
                                      "gold_reward": {"per_prompt": test, "ci": [gold - 0.02, gold + 0.02]}})
    write_json(folder / "val" / "eval.json", {"gold_reward": {"per_prompt": test[:60]}})
    info = {"fingerprint": "x", "wall_time_s": 1.0, "point": point}
    if flops is not None:
        info["compute"] = {"flops": flops, "generated_tokens": int(flops / 1e8), "trained_tokens": int(flops / 1e9),
                           "forward_passes": step, "backward_passes": step, "wall_time_s": step / 10}
    write_json(folder / "done.json", info)


def _run_folder(root, records_for=("ppo", "dpo")):
    rng = np.random.default_rng(0)
    _point(root, rng, "sft", None, 0, 0.0, 0.0, final=True)
    for seed in (0, 1, 2):
        for method, kls, flops in (("dpo", DPO_KL, DPO_FLOPS), ("ppo", PPO_KL, PPO_FLOPS)):
            for i, (kl, f) in enumerate(zip(kls, flops)):
                _point(root, rng, method, seed, 10 * (i + 1), kl, _gold(method, seed, kl),
                       flops=f if method in records_for else None, final=i == 2)
    return root


def test_a_method_that_wins_at_matched_kl_and_loses_at_matched_compute_reads_so(tmp_path):
    from trl_plus.pipeline import render_report

    out = render_report(_run_folder(tmp_path))
    data = json.loads((out / "report.json").read_text())
    kl = data["comparisons"][0]["gold"]
    assert (kl["status"], kl["winner"]) == ("significant", "dpo")  # DPO at matched KL
    compute = data["compute"]
    assert compute["leader"] == "ppo" and compute["missing"] == []
    lo, hi = compute["range"]
    assert lo == pytest.approx(1.5e12) and hi == pytest.approx(2e12)  # what every run of both reaches
    (pair,) = compute["pairs"]
    assert (pair["a"], pair["b"], pair["ahead"]) == ("ppo", "dpo", "ppo") and pair["ci"][0] > 0
    ahead, disagree = compute["lines"][:2]
    assert ahead.startswith("At matched compute (gold reward averaged over 1.50e12 to 2.00e12 FLOPs")
    assert "PPO (reward model) is ahead of DPO by +0.2" in ahead and "Welch's t over 3 and 3 seeds" in ahead
    assert "DPO wins at matched KL but loses at matched compute" in disagree
    # both verdicts are in the report's verdict, KL first
    assert data["verdict"][0].lower() == kl["text"].lower()
    assert ahead in data["verdict"] and disagree in data["verdict"]
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "## Reward vs compute" in md and "![reward vs compute](plots/compute.png)" in md
    assert (out / "plots" / "compute.png").stat().st_size > 5000
    assert 'alt="reward vs compute" src="data:image/png;base64,' in html
    assert "6 N per trained token" in md and "Welch's t over seeds" in md  # the method, stated
    assert "wins at matched KL but loses at matched compute" in html


def test_a_method_without_compute_records_is_named_not_guessed(tmp_path):
    from trl_plus.pipeline import render_report

    out = render_report(_run_folder(tmp_path, records_for=("dpo",)))
    data = json.loads((out / "report.json").read_text())
    compute = data["compute"]
    assert compute["missing"] == ["ppo"] and compute["pairs"] == [] and compute["leader"] is None
    first, second = compute["lines"]
    assert first.startswith("No matched-compute verdict: it needs two methods whose checkpoints have compute records")
    assert "No compute record for PPO (reward model)" in second and "rather than guessed" in second
    assert not any("is ahead" in line for line in data["verdict"])
    assert (out / "plots" / "compute.png").exists()  # DPO's checkpoints are still drawn


def test_checkpoints_without_a_record_are_left_off_and_listed(tmp_path):
    from trl_plus.pipeline.layout import collect_points
    from trl_plus.pipeline.report.compute import compute_section

    root = _run_folder(tmp_path)
    marker = root / "eval" / "dpo" / "beta0.1-seed1" / "step-30" / "done.json"
    info = json.loads(marker.read_text())
    del info["compute"]
    marker.write_text(json.dumps(info))
    points = collect_points(root)
    section = compute_section([p for p in points if p.get("gold") is not None])
    assert section["left_off"] == ["dpo/beta0.1-seed1/step-30"]
    assert "dpo/beta0.1-seed1/step-30" in section["lines"][-1]
    # a marker without a record falls back to the checkpoint's own compute.json, when it is still there
    ckpt = root / "dpo" / "beta0.1-seed1" / "checkpoint-30"
    ckpt.mkdir(parents=True)
    (ckpt / COMPUTE_FILE).write_text(json.dumps({"generated_tokens": 0, "trained_tokens": 6000, "forward_passes": 30,
                                                 "backward_passes": 30, "flops": 6e12, "wall_time_s": 3.0}))
    point = next(p for p in collect_points(root) if p["id"] == "dpo/beta0.1-seed1/step-30")
    assert point["compute"]["flops"] == 6e12 and point["compute"]["complete"]
    assert next(p for p in collect_points(root) if p["id"] == "sft")["compute"] is None


def test_no_common_compute_range_gives_no_verdict(tmp_path):
    from trl_plus.pipeline.report.compute import compute_section

    points = [{"id": f"{m}/{s}/{i}", "method": m, "seed": s, "run": f"{m}/seed{s}", "step": i, "gold": g,
               "compute": {"flops": f, "complete": True}}
              for m, base in (("dpo", 1e10), ("ppo", 1e13)) for s in (0, 1)
              for i, (f, g) in enumerate(((base, 0.1), (2 * base, 0.2)))]
    section = compute_section(points)
    assert section["range"] is None and section["leader"] is None
    assert section["lines"][0].startswith("No matched-compute verdict: no compute range is reached by every run")
    assert "DPO 1.00e10 to 2.00e10" in section["lines"][0]


def test_with_more_methods_every_pair_is_tested_and_the_leader_named():
    from trl_plus.pipeline.report.compute import compute_section
    from trl_plus.pipeline.report.formatting import NAMES

    # gold rises with log FLOPs; rloo gains most per FLOP, then ppo, then dpo; seeds jitter a little
    slope = {"rloo": 0.3, "ppo": 0.2, "dpo": 0.1}
    points = [{"id": f"{m}/{s}/{i}", "method": m, "seed": s, "run": f"{m}/seed{s}", "step": i,
               "gold": slope[m] * i + 0.01 * s, "compute": {"flops": 1e12 * 2 ** i, "complete": True}}
              for m in ("dpo", "ppo", "rloo") for s in (0, 1, 2) for i in (1, 2, 3)]
    section = compute_section(points, methods=["ppo", "dpo", "rloo"])
    assert section["leader"] == "rloo" and section["methods"] == ["ppo", "dpo", "rloo"]
    assert len(section["pairs"]) == 3 and all(q["holm_p"] >= q["p_value"] for q in section["pairs"])
    name = lambda m: NAMES.get(m, m)  # noqa: E731
    assert section["lines"][0].split("), ", 1)[1].startswith(
        f"{name('rloo')} is ahead of every other method: of {name('ppo')} by +0.2")
    assert "Holm-adjusted p" in section["lines"][0]
