"""What the benchmarks that run each measurement in its own subprocess share: running a
child and reading its result line, the process's own memory figures, the toy reward, a
larger stand-in model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RESULT = "RESULT "  # a child prints its result as one line: RESULT {json}
MIB = 2**20


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def letter_share(prompts, completions, **columns):
    """The PPO benchmarks' reward: the share of 'e' in each completion."""
    from trl_plus.recipes.toy_rewards import char_share

    return char_share(prompts, completions, chars="e")


def save_stand_in(path: str, hidden_size: int, layers: int, **config_kwargs) -> None:
    """A larger stand-in of the tiny model (the same tokenizer), saved to ``path``."""
    from trl_plus.tiny import save_tiny

    save_tiny(path, hidden_size=hidden_size, num_layers=layers, num_heads=max(4, hidden_size // 64), **config_kwargs)


def run_child(script: str | Path, argv: list[str]) -> dict:
    """Run ``script argv`` in a fresh Python on one thread; its RESULT line, parsed ({} if none)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(Path(script).resolve()), *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    return json.loads(lines[-1][len(RESULT):]) if lines else {}
