"""What a plugin provides, as types: the components a registration hook adds, and the two
descriptors the built-in plugins register (trainer kinds, recipe sections).

Nothing here imports torch, TRL or another trl-plus module: every layer may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


# -- descriptors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainerKind:
    """One kind of trainer a recipe can name with ``trainer: <name>``.

    Its configuration lives in the recipe section of the same name (``dpo:``, ``ppo:``).
    ``load()`` imports the trainer and config classes on first use, so describing the
    kinds (``trl-plus validate --no-import``, ``trl-plus plugins``) imports no torch.
    """

    name: str
    consumes: Literal["pairs", "prompts"]
    load: Callable[[], tuple[type, type]]
    description: str = ""

    @property
    def trainer_class(self) -> type:
        return self.load()[0]

    @property
    def config_class(self) -> type:
        return self.load()[1]


@dataclass(frozen=True)
class RecipeSection:
    """A top-level recipe section owned by a plugin rather than by the core schema.

    ``check(value, hooks, problems)`` validates the raw value and adds each problem under
    its key path; ``path_keys`` names the keys (dotted, ``*`` for every list item or mapping
    value) whose values are paths relative to the recipe's folder.
    """

    key: str
    check: Callable[..., Any] | None = None
    path_keys: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
