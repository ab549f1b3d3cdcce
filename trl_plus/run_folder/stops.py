"""How a run stops early, and what it leaves: a signal (with a checkpoint, or at once) or a
divergence (nothing saved of the diverged model)."""

from __future__ import annotations

import signal

from ..errors import SaveError

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving ``checkpoint`` (at ``step``).

    A ``KeyboardInterrupt``, so that code catching ``Exception`` lets it through, as it
    would Ctrl-C. ``exit_code`` is 130 for SIGINT and 143 for SIGTERM. ``how`` says what
    was saved: ``"checkpoint"`` (a checkpoint at the end of the step), ``"finished"`` (the
    signal came during the final save, which was finished first: ``checkpoint`` is the
    output folder, the run is complete), ``"at_once"`` (a second signal: stopped without
    saving; ``checkpoint`` is the last complete one, or None).
    """

    def __init__(self, signum: int, checkpoint: str | None, step: int, how: str = "checkpoint"):
        self.signum, self.checkpoint, self.step, self.how = signum, checkpoint, step, how
        self.signal_name = signal.Signals(signum).name
        self.exit_code = EXIT_CODES.get(signum, 130)
        if how == "finished":
            text = (f"{self.signal_name} during the final save, which was finished first: "
                    f"the run is complete in {checkpoint}")
        elif how == "at_once":
            last = f"the last complete checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved"
            text = f"a second {self.signal_name} at step {step}: stopped at once, without saving; {last}"
        else:
            text = f"{self.signal_name} at step {step}; saved checkpoint {checkpoint}"
        super().__init__(text)


class TrainingDiverged(SaveError):
    """The loss or the gradient norm became NaN or infinite (or the weights did): training
    stopped at ``step`` and the model was not saved as a checkpoint or as the final one.

    A run failure (exit 1), like a failed save: what was saved before stays.
    """

    def __init__(self, message: str, step: int):
        self.step = step
        super().__init__(message)
