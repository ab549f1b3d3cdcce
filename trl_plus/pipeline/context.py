"""What the stages of a pipeline run share: the recipe and its parsed pipeline config, the
hooks, the run folder (:class:`~trl_plus.pipeline.rundir.RunDir`) and its plan
(``plan.json``), the fingerprints of the steps done so far, and the progress display.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..manager import Hooks
from . import config as config_mod
from .layout import POLICY_DIRS, STARTED, Plan, read_json
from .plan import PolicyRun, planned_runs
from .progress import Bar, BarPlugin, trainer_bar_callback
from .provenance import describe_change, local_inputs, made_from
from .rundir import RunDir


class Context:
    """What every stage gets: the recipe and its parsed pipeline config, the hooks, the run
    folder and its plan, the fingerprints of the steps done so far, progress bars."""

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
        self._runs: list[PolicyRun] | None = None
        self._bar_plugin = BarPlugin(self)
        self.hooks.pm.register(self._bar_plugin, name=f"trl_plus.pipeline.progress.{id(self)}")

    @property
    def kinds(self) -> dict:
        """The trainer kinds (``Hooks.trainer_kinds``): what each policy stage trains with."""
        return self.hooks.trainer_kinds

    @property
    def runs(self) -> list[PolicyRun]:
        """Every policy run of the recipe's sweep (``plan.planned_runs``)."""
        if self._runs is None:
            self._runs = planned_runs(self.config, self.kinds)
        return self._runs

    def load_model(self, name: str | Path, role: str, where: str | None = None):
        """A model for one role of a stage, loaded as the trainers load theirs: through
        ``trl_plus.loading.load_model`` and so the ``trl_plus_load_model`` hook. ``role`` is
        ``"policy"`` (a causal LM) or ``"reward"`` (sequence classification, one label);
        ``where``: the recipe key that named the model, for errors."""
        from ..loading import load_model

        with _named(where):
            return load_model(_model_section(name), self.hooks, role=role)

    def load_tokenizer(self, name: str | Path, where: str | None = None):
        """The tokenizer saved with a model (``trl_plus.loading.load_tokenizer``: a
        tokenizer without a pad token pads with its end-of-sequence token)."""
        from ..loading import load_tokenizer

        with _named(where):
            return load_tokenizer(_model_section(name))

    def close(self) -> None:
        if self.hooks.pm.is_registered(self._bar_plugin):
            self.hooks.pm.unregister(self._bar_plugin)

    def inputs(self, *settings) -> dict[str, str]:
        """The local files and folders outside the run folder that ``settings`` name, each
        with a hash of what it holds: part of a step's fingerprint (``provenance.local_inputs``)."""
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
        verb = "retraining" if rel.split("/")[0] in (*POLICY_DIRS, *self.config.methods) else "redoing it"
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
        bar = Bar(desc, total, self.progress)
        try:
            yield bar
        finally:
            bar.close()

    def attach_bar(self, trainer, label: str) -> None:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(trainer_bar_callback(lambda d, t: Bar(d, t, self.progress), label))

    @contextlib.contextmanager
    def trainer_bar(self, label: str):
        self._bar_plugin.label = label
        try:
            yield
        finally:
            self._bar_plugin.label = None



def _model_section(name: str | Path):
    """A recipe's ``model:`` section naming ``name``, every other setting at its default."""
    from ..recipe import ModelSection

    return ModelSection(name_or_path=str(name))


@contextlib.contextmanager
def _named(where: str | None):
    """A loading error of a ``model:`` key, said under the pipeline's key ``where`` instead."""
    from ..errors import RecipeError

    try:
        yield
    except RecipeError as exc:
        if where is None or not (exc.key or "").startswith("model."):
            raise
        raise RecipeError(str(exc)[len(exc.key) + 2:], where) from None
