"""Wall time of one PPO update (trl_plus.PPOTrainer) against one RLOO update (trl.RLOOTrainer).

Same tiny offline model, prompts, reward function, batch size and completion length.
One update = one optimizer step including its rollout (generation, scoring, reference
and critic forwards, loss, backward, step): ``steps_per_generation=1, num_iterations=1``.

A third trainer measures the floor: RLOO plus the critic's own work in a PPO update and
nothing else (``floor``: the critic's forward at rollout, its forward and backward in the
loss, its gradient clipping and its share of the optimizer step, called through the same
``PPOCriticMixin`` code as PPOTrainer's; no per-token rewards, GAE, whitening, checks or
PPO logging). PPO over the floor is what PPOTrainer costs above its critic.

Each repetition builds a fresh trainer of each kind and trains them in lockstep (the
default, ``--protocol steps``): one optimizer step of each in turn, each trainer in its
own thread and only the one whose turn it is running, so that the others wait while a
step is timed and a change in the machine's load between steps hits every trainer alike.
Each round of steps gives a ratio; the figure is the median of the rounds' ratios. The
first step of each trainer (warm-up) is not counted, and the trainers' order is cycled
between repetitions. ``--protocol runs`` is the earlier design: whole training runs one
after another. (The trainers share torch's random generator, so their samples are not a
lone run's; the tiny model's completions run to full length either way.)

    python benchmarks/ppo_step.py --reps 7 --steps 8
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _timing import iqr

from trl_plus.recipes.toy_rewards import char_share

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
NAMES = {"ppo": "PPO", "rloo": "RLOO", "floor": "floor"}
CLOCKS = ("wall", "cpu")  # wall: what a user waits; cpu: the stepping thread's CPU time, less disturbed by other jobs


def letter_share(prompts, completions, **columns):
    """The toy task: share of the completion's visible characters that are the letter 'e'."""
    return char_share(prompts, completions, chars="e")


def rloo_with_critic():
    """``trl.RLOOTrainer`` plus PPO's critic work and nothing else (the ``floor`` side)."""
    import torch
    import trl

    from trl_plus.trainers.ppo_critic import PPOCriticMixin, critic_from_policy
    from trl_plus.trainers.ppo_loss import PPOLossMixin, _ZeroCriticGrads

    class RLOOWithCritic(PPOCriticMixin, PPOLossMixin, trl.RLOOTrainer):
        """PPOLossMixin for the critic's parameter groups and clipping only: RLOO's minibatches and loss."""

        _prepare_inputs = trl.RLOOTrainer._prepare_inputs

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.args.critic_learning_rate = None
            self._attach_critic(critic_from_policy(self.model, self._tokenizer.pad_token_id))
            self.add_callback(_ZeroCriticGrads(self))

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            values = self._rollout_values(out, "train" if self.model.training else "eval")
            if values.requires_grad:  # the critic's forward for the loss too, where PPOTrainer's is (ppo_rollout)
                out["values_for_loss"] = values
            out["old_values"] = values.detach()
            return out

        def _compute_loss(self, model, inputs):
            loss = trl.RLOOTrainer._compute_loss(self, model, inputs)
            values = inputs.pop("values_for_loss", None)
            if values is None:
                values = self._values(inputs)  # the same call as PPO's loss; any target costs the same
            mask = inputs["completion_mask"].to(values.dtype)
            target = inputs["old_values"] + inputs["advantages"].unsqueeze(1)
            value_loss = 0.5 * ((values - target) ** 2 * mask).sum() / mask.sum().clamp(min=1)
            return loss + 0.1 * value_loss.to(torch.float32)

    return RLOOWithCritic


def build_trainer(kind: str, model_path: str, opts, workdir: str):
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import trl_plus

    rows = [json.loads(line) for line in (RECIPES / "data" / "tiny_prefs.jsonl").read_text().splitlines() if line]
    dataset = Dataset.from_list([{"prompt": r["prompt"]} for r in rows])
    common = dict(
        output_dir=os.path.join(workdir, kind),
        learning_rate=1e-3,
        per_device_train_batch_size=opts.batch_size,
        num_generations=2,
        max_completion_length=opts.completion_length,
        max_steps=opts.steps,
        logging_steps=opts.steps,
        save_strategy="no",
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        beta=0.05,
        seed=0,
        gradient_checkpointing=not getattr(opts, "no_gradient_checkpointing", False),  # TRL's default: on (policy, critic)
    )
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if kind == "ppo":
        return trl_plus.PPOTrainer(
            model, args=trl_plus.PPOConfig(**common), train_dataset=dataset, processing_class=tokenizer, rewards=[letter_share]
        )
    cls = rloo_with_critic() if kind == "floor" else trl.RLOOTrainer
    return cls(model, reward_funcs=letter_share, args=trl.RLOOConfig(**common), train_dataset=dataset, processing_class=tokenizer)


class _Turns:
    """Whose step it is among trainers training in threads; a finished trainer is skipped."""

    def __init__(self, n: int):
        self.cond = threading.Condition()
        self.turn, self.done = 0, [False] * n

    def wait(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)

    def pass_on(self, i: int, finished: bool = False) -> None:
        with self.cond:
            self.done[i] = self.done[i] or finished
            n = len(self.done)
            self.turn = next(((i + k) % n for k in range(1, n + 1) if not self.done[(i + k) % n]), i)
            self.cond.notify_all()


def _timer(times: dict, turns: _Turns | None = None, index: int = 0):
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if turns is not None:
                turns.wait(index)

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter(), time.thread_time()

        def on_step_end(self, args, state, control, **kwargs):
            times["wall"].append(time.perf_counter() - self.start[0])
            times["cpu"].append(time.thread_time() - self.start[1])
            if turns is not None:  # the next trainer's step; this one's next when the turn comes back
                turns.pass_on(index)
                turns.wait(index)

    return Timer()


def step_times(kind: str, model_path: str, opts, workdir: str) -> dict[str, list[float]]:
    """One trainer's timed steps, trained alone (``--protocol runs``)."""
    trainer = build_trainer(kind, model_path, opts, workdir)
    times: dict[str, list[float]] = {clock: [] for clock in CLOCKS}
    trainer.add_callback(_timer(times))
    trainer.train()
    return {clock: values[1:] for clock, values in times.items()}  # the first step pays for warm-up


def lockstep_times(kinds, model_path: str, opts, workdir: str) -> dict[str, dict[str, list[float]]]:
    """Every kind's timed steps, the trainers stepping in turn (``--protocol steps``)."""
    trainers = [build_trainer(kind, model_path, opts, workdir) for kind in kinds]
    turns = _Turns(len(kinds))
    times = {kind: {clock: [] for clock in CLOCKS} for kind in kinds}
    errors: list[BaseException] = []

    def train(i: int, trainer) -> None:
        try:
            trainer.train()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
        finally:
            turns.pass_on(i, finished=True)

    threads = []
    for i, (kind, trainer) in enumerate(zip(kinds, trainers)):
        trainer.add_callback(_timer(times[kind], turns, i))
        threads.append(threading.Thread(target=train, args=(i, trainer), name=f"train-{kind}"))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {kind: {clock: values[1:] for clock, values in t.items()} for kind, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7, help="repetitions (fresh trainers; orders cycled; at least 7)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per trainer and repetition (first not timed)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--completion-length", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's choice)")
    parser.add_argument("--no-floor", action="store_true", help="PPO and RLOO only (no RLOO-plus-critic side)")
    parser.add_argument("--no-gradient-checkpointing", action="store_true",
                        help="train without gradient checkpointing (TRL's default is on, for every trainer here)")
    parser.add_argument("--protocol", choices=("steps", "runs"), default="steps",
                        help="steps: trainers step in turn (default); runs: whole runs one after another")
    opts = parser.parse_args(argv)

    import torch
    import transformers

    from trl_plus.tiny import ensure_tiny

    transformers.logging.set_verbosity_error()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    model_path = str(ensure_tiny("tiny:causal-lm"))
    kinds = ("ppo", "rloo") if opts.no_floor else ("ppo", "rloo", "floor")
    orders = list(itertools.permutations(kinds))
    pairs = [("ppo", "rloo")] if opts.no_floor else [("ppo", "rloo"), ("floor", "rloo"), ("ppo", "floor")]
    samples = {(c, k): [] for c in CLOCKS for k in kinds}
    ratios = {(c, p): [] for c in CLOCKS for p in pairs}
    reps = max(opts.reps, 7)
    with tempfile.TemporaryDirectory() as workdir:
        for rep in range(reps):
            order = orders[rep % len(orders)]
            if opts.protocol == "steps":
                this = lockstep_times(order, model_path, opts, workdir)
            else:
                this = {kind: step_times(kind, model_path, opts, workdir) for kind in order}
            for c in CLOCKS:
                for kind in kinds:
                    samples[(c, kind)] += this[kind][c]
                for a, b in pairs:
                    if opts.protocol == "steps":  # one ratio per round of steps
                        ratios[(c, (a, b))] += [x / y for x, y in zip(this[a][c], this[b][c])]
                    else:  # one per repetition: the median steps of runs made back to back
                        ratios[(c, (a, b))].append(statistics.median(this[a][c]) / statistics.median(this[b][c]))
    unit = "rounds of steps" if opts.protocol == "steps" else "repetitions"
    print(
        f"tiny Llama (hidden 64, 2 layers), batch {opts.batch_size} x completion {opts.completion_length} tokens, "
        f"{reps} repetitions x {opts.steps - 1} timed steps ({opts.protocol} protocol), torch threads {torch.get_num_threads()}, "
        f"gradient checkpointing {'off' if opts.no_gradient_checkpointing else 'on'}"
    )
    for c in CLOCKS:
        print(f"{c} time:")
        for kind in ("rloo", "floor", "ppo"):
            if kind in kinds:
                v = samples[(c, kind)]
                q1, q3 = iqr(v)
                print(f"  {kind:5s} median {statistics.median(v) * 1000:8.1f} ms/update  (IQR {q1 * 1000:.1f}-{q3 * 1000:.1f} ms, n={len(v)})")
        for a, b in pairs:
            r = ratios[(c, (a, b))]
            r1, r3 = iqr(r)
            print(f"  ratio {NAMES[a]}/{NAMES[b]}: median {statistics.median(r):.3f} (IQR {r1:.3f}-{r3:.3f} over {len(r)} {unit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
