"""The comparison report: ``report.md`` and a self-contained ``report.html``.

Everything is read back from the run folder (eval results, trainer states, stage
markers), so ``trl-plus report RUN_DIR`` re-renders it without the recipe's models.

The verdict is ``trl_plus.eval.compare_frontiers``: each seed's reward-vs-KL curve (a
least-squares fit through the SFT point over all its checkpoints, so the density of a
sweep cannot tilt it) averaged over the KL range the methods reach, one number per seed,
Welch's t over seeds; the headline tests are one family under Holm's correction. The
frontier plot draws exactly those curves, so the two cannot disagree.

One module per concern:

- ``reading``: what the report reads from the run folder (through ``pipeline.layout``);
- ``comparisons``: the verdict's tests (every pair of arms), their family, the ranking of
  the arms and the power of the headline test;
- ``verdict``: the verdict's sentences (and the scope, what an incomplete run misses);
- ``tables``: the method, ranking, win-rate and lm-eval tables;
- ``compute``: gold reward against training compute, the arms at matched compute;
- ``diagnostic_sections``: over-optimisation, best-of-n, preference-data quality;
- ``build``: all of it gathered as the plain data of ``report.json``;
- ``render``: the figures and the Markdown / HTML from the templates; the report stage;
- ``formatting``: the method names and number formats they all write with.
"""

from __future__ import annotations

from .build import build
from .formatting import NAMES, RL_METHODS
from .render import TEMPLATE, render_report, run_report
from .verdict import INCOMPLETE, SCOPE

# The helpers the tests (and benchmarks/) call one by one, under the names they had when
# the report was one module.
from .comparisons import (_comparisons, _family, _frontier_inputs, _pairs, _power, _ranking,  # noqa: F401
                          _sft_win_scores)
from .diagnostic_sections import _bon_against, _overoptimisation, _pairs_quality  # noqa: F401
from .formatting import _ci, _fmt, _listed, _sentence, _signed  # noqa: F401
from .reading import _best_of_n, _cost_rows, _histories, _kl_controllers, _reads  # noqa: F401
from .tables import (_alignment_tax, _lm_eval_rows, _margins, _method_rows, _paired, _ranking_rows,  # noqa: F401
                     _win_rows)
from .verdict import _family_line, _incomplete_line, _kl_measure, _left_out_line, _missing_text  # noqa: F401
from .verdict import _power_text, _verdict_lines  # noqa: F401

__all__ = ["INCOMPLETE", "NAMES", "RL_METHODS", "SCOPE", "TEMPLATE", "build", "render_report", "run_report"]
