"""The shipped accelerate configs are ones accelerate itself accepts."""

from importlib import resources

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig

CONFIGS = sorted(p.name for p in resources.files("trl_plus.recipes").joinpath("accelerate").iterdir() if p.name.endswith(".yaml"))


def test_configs_are_shipped():
    assert {"cpu.yaml", "multi_gpu.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp.yaml"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_accelerate_parses_config(name):
    path = resources.files("trl_plus.recipes").joinpath("accelerate", name)
    raw = yaml.safe_load(path.read_text())
    config = ClusterConfig.from_yaml_file(str(path))
    assert str(config.distributed_type).split(".")[-1] == raw["distributed_type"]
