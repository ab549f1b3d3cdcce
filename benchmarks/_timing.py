"""Side-by-side timing that survives a noisy machine: the two sides alternate (A B, then
B A, ...) over at least seven repeats, and what is reported is the median of the
per-repeat ratios with its interquartile range, never the best repeat (which only says
which repeat the neighbours spared)."""

from __future__ import annotations

import statistics
import time

MIN_REPEATS = 7


def interleaved(ours, theirs, repeats: int = MIN_REPEATS) -> dict:
    """Time ``ours()`` and ``theirs()`` alternately; ``ratio`` is theirs / ours per repeat.

    Returns medians of each side's seconds, the median ratio, its IQR, and the last result
    of each side (for checking they agree)."""
    repeats = max(repeats, MIN_REPEATS)
    t_ours, t_theirs, out = [], [], {}
    for r in range(repeats):
        order = (("ours", ours, t_ours), ("theirs", theirs, t_theirs))
        for name, fn, times in (order if r % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            out[name] = fn()
            times.append(time.perf_counter() - t)
    ratios = sorted(b / a for a, b in zip(t_ours, t_theirs))
    return {"repeats": repeats, "ours_s": statistics.median(t_ours), "theirs_s": statistics.median(t_theirs),
            "ratio": statistics.median(ratios), "ratio_iqr": iqr(ratios), "ours": out["ours"], "theirs": out["theirs"]}


def iqr(values, method: str = "exclusive") -> tuple[float, float]:
    """First and third quartiles (``statistics.quantiles``' ``method``); both the value
    itself when there is only one."""
    values = list(values)
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method=method)
    return q[0], q[2]


_LIMITS = []  # threadpoolctl limits, kept alive for the process


def pin_threads(n: int | None) -> int:
    """Pin torch's CPU threads and the BLAS / OpenMP pools numpy and scikit-learn use (one
    by default: thread hand-off dominates small work and varies with the machine's load);
    returns torch's count in force."""
    import torch

    if n:
        torch.set_num_threads(n)
        from threadpoolctl import threadpool_limits

        _LIMITS.append(threadpool_limits(limits=n))
    return torch.get_num_threads()
