"""Reward source: a Hugging Face sequence-classification model with one label."""

from __future__ import annotations

import trl_plus


class RewardModelSource:
    """Scores prompt + completion with a reward model, batched, at the last non-pad token.

    Pooling is done here from the attention mask (right padding) rather than by the
    model's pad-token search, which loses a trailing token when pad == eos.
    """

    def __init__(
        self,
        model: str,
        batch_size: int = 16,
        max_length: int = 512,
        append_eos: bool = False,
        device: str | None = None,
        dtype: str = "float32",
        revision: str | None = None,
        trust_remote_code: bool = False,
        components=None,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from trl_plus.loading import pad_with_eos
        from trl_plus.tiny import TINY_PREFIX, ensure_tiny

        path = str(ensure_tiny(model)) if model.startswith(TINY_PREFIX) else model
        self.tokenizer = pad_with_eos(
            AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code))
        self.tokenizer.padding_side = "right"
        init_kwargs = {"dtype": getattr(torch, dtype), "revision": revision, "trust_remote_code": trust_remote_code}
        if components is not None:  # through the trl_plus_load_model hook, as every model a run loads
            self.model = components.hooks.load_model(model, "reward", init_kwargs)
        else:
            self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **init_kwargs)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.batch_size, self.max_length, self.append_eos = batch_size, max_length, append_eos

    def _head(self):
        for name in ("score", "classifier", "v_head"):
            head = getattr(self.model, name, None)
            if head is not None:
                return head
        return None

    def __call__(self, prompts, completions, **columns):
        import torch

        eos = self.tokenizer.eos_token if self.append_eos and self.tokenizer.eos_token else ""
        texts = [p + c + eos for p, c in zip(prompts, completions)]
        scores: list[float] = []
        head = self._head()
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            captured = {}
            handle = head.register_forward_hook(lambda m, i, o: captured.update(out=o)) if head is not None else None
            try:
                with torch.no_grad():
                    out = self.model(**enc)
            finally:
                if handle is not None:
                    handle.remove()
            per_token = captured.get("out")
            if per_token is not None and per_token.dim() == 3:
                last = enc["attention_mask"].sum(dim=1) - 1
                values = per_token[torch.arange(per_token.size(0), device=per_token.device), last, 0]
            else:
                values = out.logits[:, 0]
            scores.extend(values.float().cpu().tolist())
        return scores


@trl_plus.hookimpl
def trl_plus_register_reward_sources(register):
    register.add("reward_model", RewardModelSource)
