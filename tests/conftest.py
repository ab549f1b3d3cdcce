import os

import pytest

# Before anything imports datasets, transformers or huggingface_hub: never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_PLUS_DISABLE_PLUGIN_AUTOLOAD", "")


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread avoids thrashing."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
