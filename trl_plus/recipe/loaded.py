"""A validated recipe: its typed sections, the raw mapping (paths made absolute), where it
came from, and what each plugin section's check made of its section."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from .schema import RecipeModel


@dataclasses.dataclass
class Recipe:
    """A validated recipe: the typed sections, the raw dict, where it came from.

    Its sections read as attributes (``recipe.model``, ``recipe.dpo``, ``recipe.stages``);
    ``parsed`` holds, by key, what a plugin section's check returned for its section (the
    pipeline's parsed config under ``stages``), so that nothing parses a section twice.
    """

    spec: RecipeModel
    raw: dict
    source: Path | None
    parsed: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __getattr__(self, name: str):
        spec = self.__dict__.get("spec")
        if spec is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(spec, name)

    @property
    def trainer_args(self) -> dict:
        return dict(getattr(self.spec, self.spec.trainer))

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The recipe as saved next to a run, addresses without their credentials."""
        from ..redact import redact_urls

        return yaml.safe_dump(redact_urls(self.raw), sort_keys=False)
