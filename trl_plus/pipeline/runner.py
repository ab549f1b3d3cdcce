"""Running a pipeline recipe: the stages in order, each skipped when already done.

``run_pipeline(recipe, out)`` is what ``trl-plus compare`` and ``trl-plus quickstart``
call. Console output is one progress bar per stage (or per training run) and one line
per finished step; everything else (transformers' warnings, trainer log dicts) is
silenced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from pathlib import Path

import trl_plus

from ..manager import Hooks
from . import config as config_mod
from .rundir import (POLICY_DIRS, STARTED, Plan, RunDir, describe_change, fingerprint, left_out, local_inputs, made_from,
                     read_json, run_folder_error, write_json)

STAGE_ORDER = ("corpus", "sft", "pairs", "reward", "ppo", "ppo_gt", "dpo", "eval", "report")


class _Bar:
    """A tqdm bar that is a no-op when progress display is off."""

    def __init__(self, desc: str, total: int | None, enabled: bool):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            # disable=False explicitly: TQDM_DISABLE (set while the pipeline runs) mutes other bars only.
            self._bar = tqdm(total=total, desc=f"{desc:<28}", leave=True, dynamic_ncols=True, mininterval=0.5,
                             disable=False)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **kw) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**kw, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _trainer_bar_callback(bar_factory, label: str):
    from transformers import TrainerCallback

    class StageBar(TrainerCallback):
        def __init__(self):
            self.bar = None
            self.shown: dict[str, str] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = bar_factory(label, state.max_steps)
            self.bar.update(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is None or not logs:
                return
            for key in ("loss", "reward", "kl", "beta", "kl_coef"):
                if key in logs and isinstance(logs[key], (int, float)):
                    self.shown[key] = f"{logs[key]:.3g}"  # kept until a later log updates it
            self.bar.set_postfix(**self.shown)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return StageBar()


class _BarPlugin:
    """Lifecycle-hook plugin: gives every trainer a stage bar instead of its log prints."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.label: str | None = None

    @trl_plus.hookimpl
    def trl_plus_trainer_created(self, trainer, recipe):
        if self.label is not None:
            self.ctx.attach_bar(trainer, self.label)


class Context:
    """What every stage gets: config, run folder, hooks, progress bars, fingerprints."""

    def __init__(self, recipe, out: str | Path, hooks: Hooks | None = None, progress: bool = True, log=print):
        self.recipe = recipe
        self.config = config_mod.parse(recipe)
        self.run = RunDir(out)
        self.hooks = Hooks.of(hooks)
        self.progress = progress
        self.log = log
        self.fingerprints: dict[str, str] = {}
        self.skipped: list[str] = []
        self.plan: Plan | None = None  # set by run_pipeline: what this recipe names (plan.json)
        self._bar_plugin = _BarPlugin(self)
        self.hooks.pm.register(self._bar_plugin, name=f"trl_plus.pipeline.progress.{id(self)}")

    def close(self) -> None:
        if self.hooks.pm.is_registered(self._bar_plugin):
            self.hooks.pm.unregister(self._bar_plugin)

    def inputs(self, *settings) -> dict[str, str]:
        """The local files and folders outside the run folder that ``settings`` name, each
        with a hash of what it holds: part of a step's fingerprint (``rundir.local_inputs``)."""
        return local_inputs(list(settings), self.run.root)

    def skip(self, rel: str, fp: str, settings=None, upstream: dict | None = None, inputs: dict | None = None) -> bool:
        """Record ``rel``'s fingerprint for the stages downstream (and in the plan); True
        when it is done already with this fingerprint.

        ``settings`` (what the step is made from) and ``upstream`` (the fingerprints of the
        steps it reads) go into its marker when it runs; a step found on disk with another
        fingerprint is redone, and the log says which setting changed.
        """
        self.fingerprints[rel] = fp
        if self.plan is not None:
            self.plan.record(rel, fp)
        if self.run.is_done(rel, fp):
            self.skipped.append(rel)
            self.log(f"  {rel:<28} done already: skipped")
            return True
        new = made_from(settings, upstream, inputs)
        self.run.settings[rel] = new
        verb = "retraining" if rel.split("/")[0] in POLICY_DIRS else "redoing it"
        marker = self.run.marker(rel)
        started = read_json(self.run.path(rel, STARTED), None)
        if marker is not None:
            self.log(f"  {rel:<28} out of date ({describe_change(marker, new)}): {verb}")
        elif isinstance(started, dict) and started.get("fingerprint") != fp:
            self.log(f"  {rel:<28} an interrupted attempt, out of date ({describe_change(started, new)}): "
                     "starting over")
        return False

    @contextlib.contextmanager
    def bar(self, desc: str, total: int | None):
        bar = _Bar(desc, total, self.progress)
        try:
            yield bar
        finally:
            bar.close()

    def attach_bar(self, trainer, label: str) -> None:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_trainer_bar_callback(lambda d, t: _Bar(d, t, self.progress), label))

    @contextlib.contextmanager
    def trainer_bar(self, label: str):
        self._bar_plugin.label = label
        try:
            yield
        finally:
            self._bar_plugin.label = None


LAUNCH_LOG = "launch.log"  # in a run's folder: the output of its launched processes


LAUNCH_RECIPE = ".launch-recipe.yaml"  # the unredacted recipe a launched run reads, for its life only


def train_launched(ctx, raw: dict, folder: Path, resume: str | None, label: str):
    """Train one run recipe as ``trl-plus train`` under the recipe's ``launcher:`` (every
    GPU, or several CPU processes); returns its trainer state, read back from the folder.

    The recipe goes to ``folder/.launch-recipe.yaml`` first (owner-only, removed when the
    launched training ends, however it ends), so the launched processes read exactly what
    the pipeline built, secrets included, while the run's ``recipe.yaml`` is the redacted
    copy the training writes (the folder is the run's own: a fresh start overwrites it,
    ``resume`` names the checkpoint to continue from). Evaluation, and everything else,
    stays in this process.
    """
    import subprocess

    import yaml
    from transformers import TrainerState

    from ..errors import ComponentError
    from ..launching import launch_command

    launcher = ctx.config.launcher
    recipe_file = folder / LAUNCH_RECIPE
    recipe_file.unlink(missing_ok=True)
    fd = os.open(recipe_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(raw, sort_keys=False))
    train_args = [str(recipe_file), "--output-dir", str(folder)] + (["--resume", str(resume)] if resume else ["--overwrite"])
    cmd = launch_command(train_args, launcher.command, launcher.accelerate_config, launcher.num_processes)
    log_path = folder / LAUNCH_LOG
    _release_gpu_memory()  # what earlier stages cached on GPU 0 is the launched rank 0's
    processes = launcher.num_processes or "the config's"
    ctx.log(f"  {label}: {launcher.command} on {processes} processes (log: {log_path})")
    try:
        with open(log_path, "a") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    finally:
        recipe_file.unlink(missing_ok=True)
    if code in (130, -2):  # interrupted (SIGINT): the run keeps its checkpoints, a re-run resumes it
        raise KeyboardInterrupt
    if code:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise ComponentError(f"{label}: the launched training exited with code {code}; its log is {log_path}:\n{tail}")
    state = folder / "trainer_state.json"
    if not state.exists():
        raise ComponentError(f"{label}: the launched training finished without writing {state}")
    return TrainerState.load_from_json(str(state))


def _release_gpu_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def quiet_libraries() -> None:
    """Library chatter off: the pipeline's own bars and lines are the console output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    for name in ("trl", "lm_eval", "lm-eval", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def _muted_foreign_bars():
    """Other libraries' tqdm bars (lm-eval, datasets) off while the pipeline runs."""
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def run_pipeline(recipe, out: str | Path, hooks=None, progress: bool = True, log=print, stop_after: str | None = None) -> Path:
    """Run every stage of a pipeline recipe into ``out``; returns the report folder.

    :param stop_after: a stage name; stop once it is done (the others stay to run).
    """
    from . import evaluate, policy, preflight, report, stages

    quiet_libraries()
    ctx = Context(recipe, out, hooks, progress, log)
    started = time.time()
    claimed = False
    try:
        ctx.run.check_ours(recipe.source)  # a folder of the user's own files is not a run folder
        ctx.run.claim()  # one pipeline per folder at a time
        claimed = True
        if ctx.run.took_over:
            log(f"  taking over {ctx.run.root}: the run that held it (pid {ctx.run.took_over.get('pid')}) is no "
                "longer running (it crashed or was killed)")
        preflight.check_pipeline(ctx)  # what later stages need, checked before the first one runs
        with _muted_foreign_bars():
            _save_recipe(ctx)
            cfg = ctx.config.stages
            runs = policy.planned_runs(ctx.config)
            names = [s for s in ("corpus", "sft", "pairs", "reward") if s in ("sft", "pairs") or getattr(cfg, s) is not None]
            ctx.plan = Plan.start(ctx.run.root, recipe.hash, names + ["eval"], [r.rel for r in runs])
            extra = left_out(ctx.run.root, ctx.plan.runs, ctx.plan.data["stages"])
            if extra:
                log(f"  left out of the report, kept on disk (the recipe does not name them): {', '.join(extra)}")
            steps = []  # (stage, folder of its marker, function)
            if cfg.corpus is not None:
                steps.append(("corpus", "corpus", lambda: stages.run_corpus(ctx)))
            steps += [("sft", "sft", lambda: stages.run_sft(ctx)), ("pairs", "pairs", lambda: stages.run_pairs(ctx))]
            if cfg.reward is not None:
                steps.append(("reward", "reward", lambda: stages.run_reward(ctx)))
            for run in runs:
                steps.append((run.method, run.rel, lambda run=run: policy.run_policy(ctx, run)))
            steps += [("eval", "eval", lambda: evaluate.run_eval(ctx)), ("report", None, lambda: report.run_report(ctx))]
            for i, (name, rel, fn) in enumerate(steps):
                skipped = len(ctx.skipped)
                t0 = time.time()
                fn()
                if rel is not None and rel in ctx.fingerprints:
                    # Downstream fingerprints see when this step last ran: a step redone with
                    # the same configuration (its marker deleted) makes its consumers redo too.
                    stamp = (ctx.run.marker(rel) or {}).get("finished_at")
                    ctx.fingerprints[rel] = fingerprint(ctx.fingerprints[rel], stamp)
                if len(ctx.skipped) == skipped and not progress:
                    log(f"  {name:<28} {time.time() - t0:.1f}s")
                if stop_after is not None and name == stop_after and (i + 1 == len(steps) or steps[i + 1][0] != name):
                    break
            write_json(ctx.run.path("pipeline.json"), {"wall_time_s": round(time.time() - started, 2),
                                                       "skipped": ctx.skipped, "recipe_hash": recipe.hash})
            if stop_after is None:
                ctx.plan.finish()
    except OSError as exc:  # writing under the run folder failed (a read-only or full disk)
        error = run_folder_error(exc, ctx.run.root)
        if error is None:
            raise
        raise error from exc
    finally:
        ctx.close()
        if claimed:
            ctx.run.release()
        if ctx.run.created and ctx.plan is None:  # refused before it began: leave no empty folder behind
            with contextlib.suppress(OSError):
                ctx.run.root.rmdir()
    return ctx.run.path("report")


def _save_recipe(ctx) -> None:
    """The recipe being run, saved as the run folder's ``recipe.yaml``, except when that
    file is the recipe being run (a run re-run from its own copy, perhaps edited by hand):
    it is never overwritten; what ``--set`` changed goes to ``recipe.resolved.yaml``
    (``run_folder.recipe_copy_name`` decides, as it does for ``train``)."""
    from ..run_folder import RESOLVED_RECIPE, recipe_copy_name

    name = recipe_copy_name(ctx.recipe, ctx.run.root)
    if name is not None:
        ctx.run.path(name).write_text(ctx.recipe.to_yaml())
    if name != RESOLVED_RECIPE:
        ctx.run.path(RESOLVED_RECIPE).unlink(missing_ok=True)
    else:
        ctx.log(f"  recipe.yaml is the recipe being run: left as it is; with the --set overrides it is saved as "
                f"{RESOLVED_RECIPE}")
