"""One exception hierarchy for everything a user can get wrong.

Library code raises these; only the CLI turns them into a message and an exit code.
Messages name the key, plugin or row at fault, show the value received and, where
there is a closed set of choices, list what is allowed.
"""

from __future__ import annotations


class TrlPlusError(Exception):
    """Base class of every error trl-plus raises on purpose.

    Its message never holds a secret: a value that looks like a credential (a token pasted
    where a name or a number was expected) is shown by its shape, addresses lose their
    credentials (``trl_plus.redact.hide_secrets``)."""

    def __init__(self, *args):
        from .redact import hide_secrets

        super().__init__(*(hide_secrets(a) if isinstance(a, str) else a for a in args))


class RecipeError(TrlPlusError):
    """A recipe is malformed: unknown key, wrong type, bad value, missing file."""

    def __init__(self, message: str, key: str | None = None):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class PluginError(TrlPlusError):
    """A plugin failed to load, registered something invalid, or raised inside a hook."""


class UnknownComponentError(RecipeError):
    """A recipe names a component that no plugin registered."""


class ComponentError(TrlPlusError):
    """A component (reward source, schedule, filter, judge) misbehaved at run time."""


class RewardSourceError(ComponentError):
    """A reward source raised, timed out, or returned something unusable."""


class DataError(TrlPlusError):
    """A dataset is missing, unreadable, or lacks the columns a stage needs."""


class RecipeProblems(RecipeError):
    """Every problem found in a recipe, reported at once; ``problems`` is [(key, message)].

    One problem reads like any ``RecipeError`` (``key: message``); several are one line
    each, under their key paths, so one run of ``trl-plus validate`` lists them all.
    """

    def __init__(self, problems: list[tuple[str | None, str]]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            key, message = self.problems[0]
            super().__init__(message, key)
        else:
            lines = "\n".join(f"  {key}: {message}" if key else f"  {message}" for key, message in self.problems)
            super().__init__(f"the recipe has {len(self.problems)} problems:\n{lines}")


class RunFolderError(TrlPlusError):
    """An output folder holds another run, or ``--resume`` finds no checkpoint to resume from."""


class SaveError(TrlPlusError):
    """A checkpoint or the final model could not be written (a full disk, say); a run failure."""
