"""``trl-plus`` under ``accelerate launch`` with an FSDP config, on CPU ranks (gloo).

accelerate turns FSDP on only for accelerator devices (GPUs and the like): launched on
CPU it falls back to plain data parallelism and ignores the FSDP plugin it built from the
config. FSDP2's ``fully_shard`` itself runs on CPU with the gloo backend, so this lifts
that one gate and nothing else: once accelerate's state is built, a CPU run launched with
an FSDP config gets the FSDP distributed type and the FSDP plugin accelerate built from
the config. The plugin, the wrapping, the optimizer swap and the state-dict saving and
loading are accelerate's own code.

Used as ``accelerate launch --config_file CPU_FSDP.yaml tests/fsdp_cpu/fsdp_on_cpu.py ARGS``
(``ARGS``: ``trl-plus``'s command line, e.g. ``train tiny-ppo --output-dir OUT``).
"""

from __future__ import annotations

import os
import sys


def allow_fsdp_on_cpu() -> None:
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    init = AcceleratorState.__init__
    if getattr(init, "_fsdp_on_cpu", False):
        return

    def patched(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and fsdp_plugin is not None
        if wanted and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    patched._fsdp_on_cpu = True
    AcceleratorState.__init__ = patched


if __name__ == "__main__":
    allow_fsdp_on_cpu()
    from trl_plus.cli import main

    sys.exit(main(sys.argv[1:]))
