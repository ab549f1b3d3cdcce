#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): installs what is missing from benchmarks/gpu_wheels
# without network, then measures trl-plus against TRL on one GPU and runs the quickstart.
#   bash benchmarks/gpu_check.sh --dry-run        what it would install and measure (no GPU needed)
#   bash benchmarks/gpu_check.sh --out FILE       the check, under 8 minutes on one H100
#   bash benchmarks/gpu_check.sh --fetch-wheels   fill benchmarks/gpu_wheels where PyPI can be reached
# PYTHON picks the interpreter (default: python3), the one whose torch the GPU machine provides.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
exec "${PYTHON:-python3}" "$here/gpu_check.py" "$@"
