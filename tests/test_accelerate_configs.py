"""The shipped accelerate configs are ones accelerate itself accepts, each meaning what its
name says."""

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

from trl_plus.launching import shipped_accelerate_configs

CONFIGS = shipped_accelerate_configs()
# name -> (distributed type, processes, machines)
EXPECTED = {
    "cpu": ("NO", 1, 1),
    "single_gpu": ("NO", 1, 1),
    "multi_gpu": ("MULTI_GPU", 8, 1),
    "deepspeed_zero2": ("DEEPSPEED", 8, 1),
    "deepspeed_zero3": ("DEEPSPEED", 8, 1),
    "fsdp": ("FSDP", 8, 1),
    "multi_node": ("MULTI_GPU", 16, 2),
}


def test_configs_are_shipped():
    assert set(EXPECTED) <= set(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_accelerate_parses_config(name):
    path = CONFIGS[name]
    raw = yaml.safe_load(path.read_text())
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert str(config.distributed_type).split(".")[-1] == raw["distributed_type"]
    if name in EXPECTED:
        kind, processes, machines = EXPECTED[name]
        assert (raw["distributed_type"], config.num_processes, config.num_machines) == (kind, processes, machines)
        assert config.use_cpu == (name == "cpu")


def test_sharding_configs_say_what_they_shard():
    zero2, zero3 = (load_config_from_file(str(CONFIGS[n])).deepspeed_config for n in ("deepspeed_zero2", "deepspeed_zero3"))
    assert (zero2["zero_stage"], zero3["zero_stage"]) == (2, 3)
    assert zero3["zero3_save_16bit_model"] is True  # checkpoints a from_pretrained can load
    fsdp = load_config_from_file(str(CONFIGS["fsdp"])).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_multi_node_template_says_what_to_fill_in():
    text = CONFIGS["multi_node"].read_text()
    config = load_config_from_file(str(CONFIGS["multi_node"]))
    for key in ("num_machines", "num_processes", "machine_rank", "main_process_ip", "main_process_port"):
        line = next(l for l in text.splitlines() if l.startswith(key + ":"))
        assert "FILL IN" in line, key
    assert config.main_process_ip and config.main_process_port and config.machine_rank == 0
