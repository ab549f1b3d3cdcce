"""What a reward source answers, checked: one number (or None) per completion, and not
None for every completion of batch after batch.

A source is named in errors as its recipe key, its label and what it is
(``rewards[0] 'letter_e' (python: toy_rewards.py:char_share)``); a bad answer is
described by its type and size, never printed whole.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .errors import RewardSourceError

# A built source may carry ``trl_plus_ref``: a short, secret-free text saying what it is
# (``"python: mod:fn"``, ``"http: https://host/score"``), shown after its name in errors.
REF_ATTRIBUTE = "trl_plus_ref"


def source_name(where: str, label: str, fn, with_ref: bool = True) -> str:
    """How errors name a reward source: ``rewards[0] (python: mod:fn)`` or ``rewards[0] 'alias' (...)``."""
    ref = getattr(fn, REF_ATTRIBUTE, None)
    ref = ref if isinstance(ref, str) else None
    name = where if ref and label == ref.partition(":")[0] else f"{where} {label!r}"
    return f"{name} ({ref})" if ref and with_ref else name


def _answer_shape(answer) -> str:
    if isinstance(answer, Mapping):
        return f"a {type(answer).__name__} with {len(answer)} keys"
    if isinstance(answer, (str, bytes)):
        return f"a {type(answer).__name__} of {len(answer)} characters"
    shape = getattr(answer, "shape", None)
    if shape is not None:
        return f"a {type(answer).__name__} of shape {tuple(shape)}"
    return f"a {type(answer).__name__}"


def score_list(name: str, answer, n: int) -> list:
    """``answer`` as a list of ``n`` entries, or a RewardSourceError saying what came instead."""
    expected = f"instead of a list of {n} scores (one per completion; None for 'no opinion')"
    if answer is None:
        raise RewardSourceError(f"reward source {name} returned None {expected}")
    if isinstance(answer, (Mapping, str, bytes)):
        raise RewardSourceError(f"reward source {name} returned {_answer_shape(answer)} {expected}")
    ndim = getattr(answer, "ndim", None)
    if ndim is not None and hasattr(answer, "tolist"):  # a tensor or an array
        if ndim != 1:
            raise RewardSourceError(f"reward source {name} returned {_answer_shape(answer)} {expected}")
        answer = answer.tolist()
    if isinstance(answer, numbers.Number) or not isinstance(answer, Iterable):
        raise RewardSourceError(f"reward source {name} returned {_answer_shape(answer)} {expected}")
    scores = list(answer)
    if len(scores) != n:
        raise RewardSourceError(f"reward source {name} returned {len(scores)} scores for {n} completions")
    return scores


def is_boolean(value) -> bool:
    """Whether ``value`` is a yes/no rather than a number: ``True``/``False``, a NumPy
    ``bool_`` or a 0-d bool tensor (JSON ``true`` arrives as ``True``)."""
    if isinstance(value, bool):
        return True
    dtype = getattr(value, "dtype", None)
    return dtype is not None and str(dtype) in ("bool", "torch.bool")


def as_number(value) -> float | None:
    """``value`` as a float if it is a number (a NumPy or 0-d tensor scalar too); else None.
    A boolean is not a number here: ``True`` as a score would silently mean 1.0."""
    if is_boolean(value):
        return None
    if isinstance(value, (str, bytes, Mapping)) or not (isinstance(value, numbers.Real) or hasattr(value, "__float__")):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def not_a_score(value, i: int) -> str:
    """``'high' for completion 1 (a str): ...``: one entry, shown shortened."""
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    hint = " (a yes/no is not one: answer 1.0 or 0.0)" if is_boolean(value) else ""
    return f"{text} for completion {i} ({_answer_shape(value)}): a score is a number{hint}, or None for 'no opinion'"


def numeric_scores(name: str, answer, n: int) -> list[float | None]:
    """One float (NaN kept) or None per completion from what a source returned; a clear
    error for anything else."""
    out: list[float | None] = []
    for i, s in enumerate(score_list(name, answer, n)):
        value = None if s is None else as_number(s)
        if s is not None and value is None:
            raise RewardSourceError(f"reward source {name} returned {not_a_score(s, i)}")
        out.append(value)
    return out


def checked_scores(name: str, answer, completions: Sequence[str]) -> list[float | None]:
    """One finite float or None per completion; NaN or infinity is an error too (training
    on it would poison every later step)."""
    out = numeric_scores(name, answer, len(completions))
    for i, value in enumerate(out):
        if value is not None and not math.isfinite(value):
            raise RewardSourceError(
                f"reward source {name} returned {value} for completion {i} "
                f"(completion: {completions[i][:80]!r}); return None for 'no opinion'"
            )
    return out


class UnscoredBatches:
    """Stops a run whose reward sources score nothing: after ``limit`` consecutive training
    rollout batches in which no completion got a score, a RewardSourceError. ``limit`` 0
    turns the check off. A batch with at least one score resets the count.

    :param sources: the names of the reward sources, for the message.
    :param section: the recipe section that sets the limit (``ppo``, ``rloo``, ...), for the message.
    """

    def __init__(self, limit: int, sources: Sequence[str], section: str = "ppo"):
        self.limit, self.sources, self.streak, self.section = int(limit), list(sources), 0, section

    def check(self, scores, training: bool = True) -> None:
        """``scores``: the whole batch's scores (all processes), NaN where unscored, one
        column per source or one total column."""
        if not training or self.limit <= 0:
            return
        import torch

        table = scores if scores.dim() == 2 else scores.unsqueeze(1)
        n_scored = int((~torch.isnan(table)).any(dim=1).sum().item())
        if n_scored:
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= self.limit:
            raise RewardSourceError(
                f"no completion was scored in {self.streak} consecutive rollout batches of {table.size(0)} "
                f"completions: every reward source ({', '.join(self.sources) or 'none'}) answered None for every "
                "completion, so there is nothing to train on. Fix the reward source, or raise "
                f"{self.section}.max_unscored_batches (0 turns this check off)"
            )


def unscored_guard(trainer) -> UnscoredBatches:
    """The trainer's ``UnscoredBatches``, made at first use from ``args.max_unscored_batches``."""
    guard = trainer.__dict__.get("_unscored_guard")
    if guard is None:
        mix = getattr(trainer, "reward_mix", None)
        names = mix.names if mix is not None else list(getattr(trainer, "reward_func_names", []))
        guard = trainer._unscored_guard = UnscoredBatches(getattr(trainer.args, "max_unscored_batches", 3), names,
                                                          getattr(trainer, "recipe_section", "ppo"))
    return guard


# -- a time budget for a source's call ------------------------------------------------------


class SourceInterrupted(KeyboardInterrupt):
    """A signal (SIGINT, or the second SIGTERM) stopped the run while a reward source was
    still running; ``exit_code`` is the signal's (130 / 143). A ``KeyboardInterrupt``, so
    that code catching ``Exception`` lets it through; the CLI prints it."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def interrupted_in(name: str, exc: BaseException, seconds: float) -> BaseException:
    """What a ``KeyboardInterrupt`` or ``SystemExit`` that arrived while the reward source
    ``name`` was running becomes, so that the message names the source:

    - training's own interrupt (``checkpointing.TrainingInterrupted``, a second signal):
      the same exception, its ``running`` attribute and message saying what was running;
    - another signal (SIGINT, or ``SystemExit(143)``): a :class:`SourceInterrupted`;
    - any other ``SystemExit``: the source called ``sys.exit`` itself, a ``RewardSourceError``.
    """
    if isinstance(exc, SourceInterrupted) or getattr(exc, "running", None):
        return exc
    running = f"reward source {name} was still running ({seconds:.1f} s without an answer)"
    if isinstance(exc, KeyboardInterrupt) and isinstance(getattr(exc, "exit_code", None), int):
        exc.running = running
        exc.args = (f"{exc.args[0]}; {running}" if exc.args else running,)
        return exc
    code = exc.code if isinstance(exc, SystemExit) else 130
    signal_name = {130: "SIGINT", 143: "SIGTERM"}.get(code) if isinstance(code, int) else None
    if signal_name is None:
        return RewardSourceError(f"reward source {name} called sys.exit({code!r}); a reward source returns scores or raises")
    return SourceInterrupted(
        f"{signal_name} while {running}: stopped at once; this step was not finished or saved, checkpoints saved "
        "before it are kept. If the source hangs, give it a time budget ('timeout' in its recipe entry)",
        code,
    )


class _Deadline(BaseException):
    """Raised in the main thread when a bounded call's time is up; a ``BaseException``, so
    that the reward's own ``except Exception`` does not swallow it."""


class _Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.done = False


# The signal the watchdog sends the main thread at a call's deadline: a real signal, so that
# a blocking wait (sleep, a socket, a lock, a child process) is interrupted too. Not SIGALRM:
# rewards use ``signal.alarm`` for their own time limits (math checkers do).
_DEADLINE_SIGNAL = signal.SIGRTMIN + 2 if hasattr(signal, "SIGRTMIN") else getattr(signal, "SIGUSR2", None)
_active: list[_Budget] = []  # the calls bounded in the main thread now, innermost last


def _on_deadline(signum, frame) -> None:
    now = time.monotonic()
    for budget in reversed(_active):
        if not budget.done and now >= budget.deadline:
            budget.done = True
            raise _Deadline(budget)


def _install_handler() -> bool:
    """Our handler for the deadline signal, installed at first use and left in place (a
    signal that arrives late finds it, and does nothing); False where it cannot be: no
    such signal, or another handler holds it (then the call runs in a worker thread)."""
    if _DEADLINE_SIGNAL is None:
        return False
    current = signal.getsignal(_DEADLINE_SIGNAL)
    if current in (signal.SIG_DFL, None):
        signal.signal(_DEADLINE_SIGNAL, _on_deadline)
        return True
    return current is _on_deadline


def call_with_deadline(fn: Callable, args: Sequence = (), kwargs: Mapping | None = None, *, timeout: float | None,
                       what: str) -> Any:
    """``fn(*args, **kwargs)``, given at most ``timeout`` seconds (None: no limit); past it,
    a ``RewardSourceError`` naming ``what`` and the budget. For a reward source that runs
    code it does not control (the ``python`` source uses it).

    In the main thread the call runs there, as it would unbounded (a reward may use
    ``signal.alarm``, thread-bound objects, torch's per-thread grad mode); a watchdog thread
    interrupts it at the deadline with a signal, again every second until it gives way.
    Called from another thread, it runs in a worker thread that is abandoned at the
    deadline (a daemon: Python cannot stop a thread, and it does not keep the process alive).
    A ``sys.exit`` in the call is an error naming ``what``, not an exit."""
    try:
        if not timeout:
            return fn(*args, **(kwargs or {}))
        if threading.current_thread() is threading.main_thread() and _install_handler():
            return _in_main_thread(fn, args, kwargs, timeout, what)
        return _in_worker(fn, args, kwargs, timeout, what)
    except SystemExit as exc:
        if exc.code in (130, 143):  # a signal handler's way of stopping the run
            raise
        raise RewardSourceError(f"{what} called sys.exit({exc.code!r}); a reward source returns scores or raises") from None


def _timed_out(what: str, timeout: float) -> RewardSourceError:
    return RewardSourceError(
        f"{what} did not return within {timeout:g} s (its timeout): it was stopped, and the scores of this batch "
        "with it. Make it faster, or raise 'timeout' in its recipe entry (seconds; null: no limit)"
    )


def _in_main_thread(fn, args, kwargs, timeout, what):
    budget = _Budget(timeout)
    stop = threading.Event()
    main = threading.main_thread().ident

    def watch():
        if stop.wait(timeout):
            return
        while not stop.is_set():  # again while it has not given way (it swallowed the first, or was in C code)
            signal.pthread_kill(main, _DEADLINE_SIGNAL)
            if stop.wait(1.0):
                return

    _active.append(budget)
    threading.Thread(target=watch, name=f"trl-plus deadline: {what}", daemon=True).start()
    try:
        return fn(*args, **(kwargs or {}))
    except _Deadline as exc:
        if exc.args[0] is not budget:
            raise
        raise _timed_out(what, timeout) from None
    finally:
        budget.done = True
        stop.set()
        _active.remove(budget)


def _thread_state() -> Callable[[], Any]:
    """What a worker thread must share with the caller's: torch's grad mode and CUDA device
    are per thread (a reward model scored in the worker would otherwise build a graph)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return contextlib.nullcontext
    grad = torch.is_grad_enabled()
    device = torch.cuda.current_device() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    @contextlib.contextmanager
    def state():
        if device is not None:
            torch.cuda.set_device(device)
        with torch.set_grad_enabled(grad):
            yield

    return state


def _in_worker(fn, args, kwargs, timeout, what):
    box: dict[str, Any] = {}
    done = threading.Event()
    state, context = _thread_state(), contextvars.copy_context()

    def work():
        try:
            with state():
                box["value"] = context.run(fn, *args, **(kwargs or {}))
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    deadline = time.monotonic() + timeout
    threading.Thread(target=work, name=f"trl-plus: {what}", daemon=True).start()
    while not done.wait(min(max(deadline - time.monotonic(), 0.0), 1.0)):
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout)
    if "error" in box:
        raise box.pop("error")
    return box["value"]
