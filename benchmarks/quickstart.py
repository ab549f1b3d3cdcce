"""Time and memory of the full quickstart (recipes/quickstart.yaml), stage by stage.

    python benchmarks/quickstart.py [--out DIR] [--threads N] [--set KEY=VALUE ...]

Runs the whole pipeline from nothing into a fresh folder (a temporary one unless --out),
then prints the wall time of every stage, the total, the peak resident memory of the
process (max RSS, children included) and the verdict. Budget on a 2-core CPU: <= 5
minutes (goal 4) and <= 1.5 GiB; the last line prints the time against that budget. CPU throughput varies run to run (shared machines, thermal), so
compare figures taken on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="run folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from trl_plus.manager import Hooks
    from trl_plus.pipeline import run_pipeline
    from trl_plus.recipe import load_recipe

    out = args.out or tempfile.mkdtemp(prefix="trl-plus-quickstart-")
    if args.out and os.path.exists(out):
        shutil.rmtree(out)  # a benchmark measures a run from nothing, never a resumed one
    hooks = Hooks()
    recipe = load_recipe("quickstart", args.overrides, hooks=hooks)
    started = time.time()
    run_pipeline(recipe, out, hooks=hooks, progress=False, log=lambda *_: None)
    total = time.time() - started
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    report = json.load(open(os.path.join(out, "report", "report.json")))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"{'stage':<28}{'wall s':>9}{'peak RSS MB':>13}{'tokens':>11}")
    for row in report["costs"]:
        print(f"{row['stage']:<28}{row['wall_time_s']:>9.1f}{row['peak_rss_mb']:>13.0f}{row['tokens']:>11}")
    print(f"{'total (wall clock)':<28}{total:>9.1f}{peak / 1024:>13.0f}")
    print(f"peak memory: {peak / 2**20:.2f} GiB (max RSS of the process)")
    print("verdict:")
    for line in report["verdict"]:
        print(f"  - {line}")
    print(f"report: {os.path.join(out, 'report', 'report.html')}")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    print(f"quickstart: {total:.1f} s = {total / 300:.2f} of the 300 s budget, peak {peak / 2**20:.2f} GiB of 1.5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
