import os

# Before anything imports datasets, transformers or huggingface_hub: never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_PLUS_DISABLE_PLUGIN_AUTOLOAD", "")
