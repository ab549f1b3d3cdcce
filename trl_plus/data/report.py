"""The filter report: ``filter_report.json`` in a run's output folder.

A leaf: it imports nothing of trl-plus, so the trainers, the data checks and the pipeline
all read and write the report through it.
"""

from __future__ import annotations

import json
from pathlib import Path

FILTER_REPORT = "filter_report.json"


def write_filter_report(output_dir: str, reports: dict, rollouts=None) -> None:
    """``filter_report.json``: per dataset split, rows in/out and drops per filter; with
    ``rollouts`` (a trainer's rollout filter chain, when it has filters), its counts too."""
    if rollouts:
        reports = {**reports, "rollouts": rollouts.report()}
    path = Path(output_dir) / FILTER_REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reports, indent=2))


# How many examples of what was dropped (lines, rows) a report keeps.
MAX_EXAMPLES = 3
