"""The pipeline's console output: one progress bar per stage (or per training run) and one
line per finished step; library chatter (transformers' warnings, trainer log dicts, other
libraries' bars) is silenced while it runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

import trl_plus


class Bar:
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


def trainer_bar_callback(bar_factory, label: str):
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


class BarPlugin:
    """Lifecycle-hook plugin: gives every trainer a stage bar instead of its log prints."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.label: str | None = None

    @trl_plus.hookimpl
    def trl_plus_trainer_created(self, trainer, recipe):
        if self.label is not None:
            self.ctx.attach_bar(trainer, self.label)



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
def muted_foreign_bars():
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

