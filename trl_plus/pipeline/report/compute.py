"""Gold reward against training compute: which method is ahead at equal compute.

Each evaluated checkpoint carries the compute its training had spent when it was saved
(``compute.json``, read back by ``layout.collect_points``): FLOPs estimated from the
parameter count, 6 N per trained token and 2 N per generated token (the standard
approximation; ``trl_plus.run_folder.compute``). The comparison:

1. each run's checkpoints, by FLOPs, are a curve of gold reward (test prompts) in log10
   FLOPs, linear between checkpoints;
2. the compared range is the one every run of every compared method reaches: from the
   largest first-checkpoint FLOPs to the smallest last-checkpoint FLOPs;
3. each run's curve is averaged over that range (on a grid even in log FLOPs), a seed's
   number is the mean over its runs (the sweep's settings), one number per seed;
4. every pair of methods: Welch's t over those per-seed numbers
   (``trl_plus.eval.stats.welch_interval``), the pairs one family under Holm's correction.

A method none of whose checkpoints has a record is named and left out, never guessed; so
is a checkpoint without one, or with one counted from a resume rather than from step 0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations

from .formatting import NAMES, _listed, _signed

GRID_POINTS = 50
METHOD_TEXT = ("Each checkpoint's compute is the FLOPs its training had spent when it was saved, estimated from the "
               "parameter count N: 6 N per trained token (a forward and a backward pass) and 2 N per generated token "
               "(a forward pass), the standard approximation; PPO's N adds its critic's parameters, and passes that "
               "train nothing (a reference model's, a rollout's log-probs) are left out. Per run, gold reward on the test "
               "prompts is interpolated linearly in log10 FLOPs between its checkpoints and averaged over the compute "
               "range every run of the compared methods reaches (%d points even in log FLOPs); a seed's number is the "
               "mean over its runs; methods are compared by Welch's t over seeds (95%%), every pair of methods one "
               "family under Holm's correction." % GRID_POINTS)


def _name(method: str) -> str:
    return NAMES.get(method, method)


def _flops(x: float) -> str:
    return f"{x:.2g}" if x < 1e3 else f"{x:.2e}".replace("e+0", "e").replace("e+", "e")


def _usable(point: dict) -> bool:
    c = point.get("compute")
    return (isinstance(c, dict) and c.get("complete", True) and isinstance(c.get("flops"), (int, float))
            and c["flops"] > 0 and point.get("gold") is not None)


def _runs(points: list[dict], methods: list[str]) -> dict[tuple, list[tuple[float, float]]]:
    """(method, seed, run) -> [(log10 FLOPs, gold)] of its checkpoints with a record, by FLOPs."""
    runs = defaultdict(list)
    for p in points:
        if p["method"] in methods and _usable(p):
            runs[(p["method"], p["seed"], p["run"])].append((math.log10(p["compute"]["flops"]), p["gold"]))
    return {k: sorted(v) for k, v in runs.items()}


def _table(points: list[dict], methods: list[str], per_seed: dict) -> list[dict]:
    """Per method: its per-seed numbers over the range, and what its runs' last checkpoints cost (medians)."""
    from statistics import median

    from ...eval.stats import t_interval

    rows = []
    for m in methods:
        last = {}
        for p in points:
            if p["method"] == m and _usable(p) and (p["run"] not in last or p["step"] > last[p["run"]]["step"]):
                last[p["run"]] = p
        costs = [p["compute"] for p in last.values()]
        values = list((per_seed.get(m) or {}).values())
        med = lambda key: median([c.get(key) or 0 for c in costs]) if costs else None  # noqa: E731
        rows.append({"method": m, **t_interval(values), "seed_values": values, "runs": len(costs),
                     "flops": med("flops"), "generated_tokens": med("generated_tokens"),
                     "trained_tokens": med("trained_tokens"), "wall_time_s": med("wall_time_s")})
    return rows


def compute_section(points: list[dict], kl_comparisons: list[dict] | None = None, methods: list[str] | None = None,
                    confidence: float = 0.95) -> dict:
    """The matched-compute comparison of every method in ``points`` (see the module), with
    its sentences: ``lines`` (which method is ahead at equal compute, what has no record,
    and where it disagrees with ``kl_comparisons``, the matched-KL verdict's tests).

    :param methods: the methods in the report's order (default: as they come in ``points``).
    """
    import numpy as np

    from ...eval import holm
    from ...eval.stats import MIN_SEEDS, welch_interval

    trained = [p for p in points if p["method"] != "sft"]
    present = list(dict.fromkeys(p["method"] for p in trained))
    methods = [m for m in methods or [] if m in present] + [m for m in present if m not in (methods or [])]
    missing = [m for m in methods if not any(_usable(p) for p in trained if p["method"] == m)]
    left_off = [p["id"] for p in trained if p["method"] not in missing and not _usable(p)]
    compared = [m for m in methods if m not in missing]
    runs = _runs(trained, compared)
    short = sorted({run for (_, _, run), pts in runs.items() if len(pts) < 2})
    runs = {k: v for k, v in runs.items() if len(v) >= 2}
    compared = [m for m in compared if any(k[0] == m for k in runs)]
    out = {"methods": compared, "missing": missing, "left_off": left_off, "runs_too_short": short, "range": None,
           "grid": None, "curves": {}, "per_seed": {}, "pairs": [], "leader": None, "rows": [], "lines": [],
           "method": METHOD_TEXT, "drawable": bool(runs)}
    lines = out["lines"]
    if missing:
        its, it = ("its", "it is") if len(missing) == 1 else ("their", "they are")
        lines.append(f"No compute record for {_listed([_name(m) for m in missing])}: none of {its} checkpoints has a "
                     f"compute.json (saved before trl-plus recorded compute; retrain for one), so {it} left out of "
                     "the matched-compute comparison and its plot rather than guessed.")
    if len(compared) < 2:
        if methods:
            lines.insert(0, "No matched-compute verdict: it needs two methods whose checkpoints have compute records"
                            f" (with records: {_listed([_name(m) for m in compared]) or 'none'}).")
        return out
    lo = max(v[0][0] for v in runs.values())
    hi = min(v[-1][0] for v in runs.values())
    if not lo < hi:
        spans = [f"{_name(m)} {_flops(10 ** min(v[0][0] for k, v in runs.items() if k[0] == m))} to "
                 f"{_flops(10 ** max(v[-1][0] for k, v in runs.items() if k[0] == m))}" for m in compared]
        lines.insert(0, "No matched-compute verdict: no compute range is reached by every run (FLOPs of first to last "
                        f"checkpoint: {'; '.join(spans)}); the compute plot shows where each method stands.")
        return out
    grid = np.linspace(lo, hi, GRID_POINTS)
    seed_curves: dict = defaultdict(lambda: defaultdict(list))
    for (m, seed, _), pts in sorted(runs.items(), key=lambda kv: str(kv[0])):
        xs, ys = zip(*pts)
        seed_curves[m][seed].append(np.interp(grid, xs, ys))
    per_seed = {m: {seed: float(np.mean(c)) for seed, c in seeds.items()} for m, seeds in seed_curves.items()}
    out.update(range=[10 ** lo, 10 ** hi], grid=(10 ** grid).tolist(), per_seed=per_seed,
               curves={m: np.mean([np.mean(c, axis=0) for c in seeds.values()], axis=0).tolist()
                       for m, seeds in seed_curves.items()},
               rows=_table(trained, compared, per_seed))
    means = {m: float(np.mean(list(v.values()))) for m, v in per_seed.items()}
    order = sorted(compared, key=lambda m: -means[m])
    out["leader"] = order[0]
    pairs = []
    for a, b in combinations(order, 2):
        va, vb = (np.asarray(list(per_seed[x].values()), dtype=float) for x in (a, b))
        if min(va.size, vb.size) < MIN_SEEDS:
            pairs.append({"a": a, "b": b, "difference": means[a] - means[b], "ci": None, "p_value": None,
                          "seeds": [int(va.size), int(vb.size)]})
            continue
        diff, ci, df, p = welch_interval(va, vb, confidence)
        pairs.append({"a": a, "b": b, "difference": diff, "ci": ci, "df": df, "p_value": p,
                      "seeds": [int(va.size), int(vb.size)]})
    for pair, adjusted in zip(pairs, holm([q["p_value"] for q in pairs])):
        pair["holm_p"] = adjusted
        pair["ahead"] = pair["a"] if adjusted is not None and adjusted < 1 - confidence else None
    out["pairs"] = pairs
    where = (f"gold reward averaged over {_flops(10 ** lo)} to {_flops(10 ** hi)} FLOPs, the compute range every run "
             "reaches")
    lines.insert(0, _ahead_sentence(order, means, pairs, where, confidence))
    lines[1:1] = _disagreements(kl_comparisons or [], pairs)
    if left_off or short:
        lines.append(f"{len(left_off)} checkpoint(s) without a compute record counted from step 0 "
                     + (f"and {len(short)} run(s) with fewer than two recorded checkpoints " if short else "")
                     + "are left off the compute comparison"
                     + (f": {_listed(left_off)}" if left_off else "") + ".")
    return out


def _pair_text(pair: dict, confidence: float) -> str:
    """The difference of a pair with its interval and test, in words."""
    if pair["ci"] is None:
        return (f"{_signed(pair['difference'])} gold reward (no interval: {pair['seeds'][0]} and {pair['seeds'][1]} "
                "seeds, at least 2 each needed)")
    family = f", Holm-adjusted p = {pair['holm_p']:.2g}" if pair["holm_p"] != pair["p_value"] else ""
    return (f"{_signed(pair['difference'])} gold reward ({confidence:.0%} CI {_signed(pair['ci'][0])} to "
            f"{_signed(pair['ci'][1])}, Welch's t over {pair['seeds'][0]} and {pair['seeds'][1]} seeds, "
            f"p = {pair['p_value']:.2g}{family})")


def _ahead_sentence(order: list[str], means: dict, pairs: list[dict], where: str, confidence: float) -> str:
    """One sentence: which method is ahead at equal compute, by how much, and how sure."""
    leader = order[0]
    against = [q for q in pairs if q["a"] == leader]
    ahead = [q for q in against if q["ahead"] == leader]
    by = lambda q: f"{_name(q['b'])} by {_pair_text(q, confidence)}"  # noqa: E731
    head = f"At matched compute ({where}), "
    if any(q["ci"] is None for q in against):
        body = (f"the evidence is insufficient (fewer than 2 seeds): {_name(leader)} leads "
                + "; ".join(by(q) for q in against))
    elif len(ahead) == len(against) == 1:
        body = f"{_name(leader)} is ahead of {by(ahead[0])}"
    elif len(ahead) == len(against):
        body = f"{_name(leader)} is ahead of every other method: of " + "; of ".join(by(q) for q in against)
    elif ahead:
        body = (f"{_name(leader)} leads: it is ahead of " + "; of ".join(by(q) for q in ahead)
                + "; not detectably ahead of " + "; of ".join(by(q) for q in against if q not in ahead))
    else:
        body = f"no method is detectably ahead: {_name(leader)} leads " + "; ".join(by(q) for q in against)
    gold = ", ".join(f"{_name(m)} {means[m]:.3f}" for m in order)
    return f"{head}{body}; mean gold reward over that range: {gold}."


def _disagreements(kl_comparisons: list[dict], pairs: list[dict]) -> list[str]:
    """Where the matched-KL verdict names a winner and matched compute says otherwise."""
    by_pair = {frozenset((q["a"], q["b"])): q for q in pairs}
    lines = []
    for cmp in kl_comparisons:
        test = cmp.get("gold") or {}
        winner = test.get("winner") if test.get("status") == "significant" else None
        if winner is None or winner not in (cmp.get("a"), cmp.get("b")):
            continue
        loser = cmp["b"] if winner == cmp["a"] else cmp["a"]
        pair = by_pair.get(frozenset((winner, loser)))
        if pair is None:
            continue
        if pair["ahead"] == loser:
            lines.append(f"The two budgets disagree: {_name(winner)} wins at matched KL but loses at matched compute, "
                         f"where {_name(loser)} is ahead. {_name(winner)} gets more gold reward per nat of KL, "
                         f"{_name(loser)} more per FLOP: which to prefer depends on which budget binds.")
        elif pair["ahead"] is None:
            lines.append(f"{_name(winner)}'s win at matched KL is not matched at equal compute: there, neither "
                         f"{_name(winner)} nor {_name(loser)} is detectably ahead.")
    return lines
