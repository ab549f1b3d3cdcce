"""The plugin manager, built on demand (never at import), and the typed facade over it."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import PluginError, TrlPlusError
from .protocols import RecipeSection, TrainerKind
from .registry import Register, Registry

if TYPE_CHECKING:  # for type checkers only; components is imported at the first components() call
    import datasets
    import transformers

    from .components import Components

PROJECT = "trl_plus"
AUTOLOAD_ENV = "TRL_PLUS_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "TRL_PLUS_BLOCK_PLUGINS"

# Loaded by module name, exactly as entry points are: the core imports none of them.
BUILTIN_PLUGINS = (
    "trl_plus.plugins.loading",
    "trl_plus.plugins.rewards.reward_model",
    "trl_plus.plugins.rewards.python_callable",
    "trl_plus.plugins.rewards.http",
    "trl_plus.plugins.kl.constant",
    "trl_plus.plugins.kl.warmup",
    "trl_plus.plugins.kl.adaptive",
    "trl_plus.plugins.filters.length",
    "trl_plus.plugins.filters.dedup",
    "trl_plus.plugins.filters.distinct_pair",
    "trl_plus.plugins.filters.min_reward_margin",
    "trl_plus.plugins.filters.regex",
    "trl_plus.plugins.filters.rollout",
    "trl_plus.plugins.judges.reward_source",
    "trl_plus.plugins.judges.reward_model",
    "trl_plus.plugins.judges.http_pairwise",
    "trl_plus.trainers.kinds",
    "trl_plus.pipeline.section",
    "trl_plus.eval.section",
)

_KINDS = {
    "reward_sources": ("reward source", "trl_plus_register_reward_sources"),
    "kl_schedules": ("KL schedule", "trl_plus_register_kl_schedules"),
    "data_filters": ("data filter", "trl_plus_register_data_filters"),
    "judges": ("judge", "trl_plus_register_judges"),
    "trainer_kinds": ("trainer kind", "trl_plus_register_trainer_kinds"),
    "recipe_sections": ("recipe section", "trl_plus_register_recipe_sections"),
}


_warned_unknown: set = set()  # what was warned about (a blocked name, a variable's value): once each
_ON, _OFF = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def _env_flag(name: str) -> bool:
    """An on/off environment variable; a value that is neither (``ture``) is read as on (it
    was set, to say something: for a switch like "disable autoload" the safe side), with a
    warning naming it, once."""
    value = os.environ.get(name, "").strip().lower()
    if value not in _ON | _OFF and (name, value) not in _warned_unknown:
        import difflib
        import logging

        _warned_unknown.add((name, value))
        close = difflib.get_close_matches(value, sorted(_ON | _OFF - {""}), n=1)
        logging.getLogger("trl_plus").warning(
            "%s=%r is neither on (1, true, yes, on) nor off (0, false, no, off): read as on.%s",
            name, os.environ[name], f" Did you mean: {close[0]}?" if close else "",
        )
    return value not in _OFF


def blocked_plugins() -> list[str]:
    return [p.strip() for p in os.environ.get(BLOCK_ENV, "").split(",") if p.strip()]


def plugin_names() -> list[str]:
    """Every name a plugin can be blocked by: the built-ins' module names, short and long,
    and the ``trl_plus`` entry points' names (installed, whether loaded or not)."""
    from importlib.metadata import entry_points

    names = [n for m in BUILTIN_PLUGINS for n in (m, m.removeprefix("trl_plus.plugins."))]
    try:
        names += [ep.name for ep in entry_points(group=PROJECT)]
    except Exception:  # broken metadata: the loading itself reports it
        pass
    return sorted(set(names))




def _warn_unknown_blocked(blocked: list[str], source: str) -> None:
    """A blocked name that is no plugin blocks nothing: say so, once per name, with the
    closest plugin name (a misspelling must not leave a plugin quietly running)."""
    import difflib
    import logging

    known = plugin_names()
    for name in blocked:
        if name in known or name in _warned_unknown:
            continue
        _warned_unknown.add(name)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        logging.getLogger("trl_plus").warning(
            "%s names %r, which is no plugin: nothing is blocked under that name.%s Plugins: %s",
            source, name, f" Did you mean: {close[0]}?" if close else "",
            ", ".join(n for n in known if not n.startswith("trl_plus.")),
        )


def get_plugin_manager(autoload: bool | None = None, blocked: list[str] | None = None) -> pluggy.PluginManager:
    """A new plugin manager: hookspecs, then ``trl_plus`` entry points, then the built-ins.

    :param autoload: load third-party entry points; defaults to on unless
        ``TRL_PLUS_DISABLE_PLUGIN_AUTOLOAD`` is set.
    :param blocked: plugin names to block (entry-point names or built-in module names,
        the short form ``rewards.http`` too); defaults to ``TRL_PLUS_BLOCK_PLUGINS``.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    _warn_unknown_blocked(blocked_plugins() if blocked is None else list(blocked),
                          BLOCK_ENV if blocked is None else "blocked=")
    for name in blocked_plugins() if blocked is None else blocked:
        pm.set_blocked(name)
        if not name.startswith("trl_plus.plugins."):
            pm.set_blocked(f"trl_plus.plugins.{name}")
    if autoload is None:
        autoload = not _env_flag(AUTOLOAD_ENV)
    if autoload:
        try:
            pm.load_setuptools_entrypoints(PROJECT)
        except Exception as exc:  # a broken third-party plugin must say who it is
            raise PluginError(f"a plugin of the {PROJECT!r} entry-point group failed to load: {exc!r}") from exc
    for module_name in BUILTIN_PLUGINS:
        if pm.is_blocked(module_name):
            continue
        pm.register(importlib.import_module(module_name), name=module_name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from exc
    return pm


def _culprit(pm: pluggy.PluginManager, hook_name: str, tb) -> str | None:
    """The plugin whose hook implementation appears in a traceback."""
    codes = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        codes[impl.function.__code__] = impl.plugin_name
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            return codes[tb.tb_frame.f_code]
        tb = tb.tb_next
    return None


def _one_plugin_at_a_time(pm: pluggy.PluginManager, hook_name: str) -> list[tuple[str, pluggy.HookCaller]]:
    """``(plugin name, caller)`` for each plugin implementing ``hook_name``, in pluggy's call
    order: each caller is pluggy's own, limited to that plugin (``subset_hook_caller``), so
    that a registration hook's register knows which plugin adds, and a ``wrapper=True`` or
    ``hookwrapper=True`` implementation runs as pluggy runs it (its code before and after
    ``yield``, around no other plugin's). An implementation under another name (``specname``)
    is isolated too (pluggy 1.7 and later)."""
    impls = reversed(getattr(pm.hook, hook_name).get_hookimpls())  # the order pluggy calls them in
    plugins = {id(impl.plugin): (impl.plugin_name, impl.plugin) for impl in impls}
    calls = []
    for name, plugin in plugins.values():
        caller = pm.subset_hook_caller(hook_name, remove_plugins=[p for _, p in plugins.values() if p is not plugin])
        calls.append((name, caller))
    return calls


class Hooks:
    """The only code that calls ``pm.hook.*``: one method per hook, errors name the plugin."""

    def __init__(self, pm: pluggy.PluginManager | None = None):
        self.pm = pm if pm is not None else get_plugin_manager()
        self._registries: dict[str, Registry] = {}
        self._registered_snapshot = None

    @classmethod
    def of(cls, plugin_manager: Hooks | pluggy.PluginManager | None) -> Hooks:
        if isinstance(plugin_manager, Hooks):
            return plugin_manager
        return cls(plugin_manager)

    # -- registries --------------------------------------------------------------------
    def _registry(self, kind: str) -> Registry:
        plugins = tuple(self.pm.get_plugins())
        if plugins != self._registered_snapshot:  # a plugin came or went: rebuild lazily
            self._registries.clear()
            self._registered_snapshot = plugins
        if kind not in self._registries:
            label, hook_name = _KINDS[kind]
            registry = Registry(label)
            for plugin_name, call in _one_plugin_at_a_time(self.pm, hook_name):
                try:
                    call(register=Register(registry, plugin_name))
                except TrlPlusError:
                    raise
                except Exception as exc:
                    raise PluginError(f"plugin {plugin_name!r} raised in {hook_name}: {exc!r}") from exc
            self._registries[kind] = registry
        return self._registries[kind]

    @property
    def reward_sources(self) -> Registry:
        return self._registry("reward_sources")

    @property
    def kl_schedules(self) -> Registry:
        return self._registry("kl_schedules")

    @property
    def data_filters(self) -> Registry:
        return self._registry("data_filters")

    @property
    def judges(self) -> Registry:
        return self._registry("judges")

    @property
    def trainer_kinds(self) -> dict[str, TrainerKind]:
        """``{name: TrainerKind}``: every trainer a recipe can name."""
        return {info.name: info.factory for info in self._registry("trainer_kinds")}

    @property
    def recipe_sections(self) -> dict[str, RecipeSection]:
        """``{key: RecipeSection}``: the top-level recipe sections plugins own."""
        return {info.name: info.factory for info in self._registry("recipe_sections")}

    def components(self, **context: Any) -> Components:
        """A :class:`trl_plus.components.Components` that builds components from recipe specs,
        with ``context`` (``tokenizer``, ``problems`` for a dry run) given to the factories."""
        from .components import Components

        return Components(self, **context)

    # -- calling -----------------------------------------------------------------------
    def _call(self, hook_name: str, **kwargs: Any):
        try:
            return getattr(self.pm.hook, hook_name)(**kwargs)
        except TrlPlusError:
            raise
        except Exception as exc:
            plugin = _culprit(self.pm, hook_name, sys.exc_info()[2]) or "unknown plugin"
            raise PluginError(f"plugin {plugin!r} raised in {hook_name}: {exc!r}") from exc

    # decision hooks (the recipe's type, a layer above, is named by its dotted path, never imported)
    def load_model(self, name_or_path: str, role: str, init_kwargs: dict[str, Any] | None = None
                   ) -> transformers.PreTrainedModel:
        model = self._call("trl_plus_load_model", name_or_path=name_or_path, role=role, init_kwargs=init_kwargs or {})
        if model is None:
            raise PluginError(f"no plugin could load model {name_or_path!r} for role {role!r}")
        return model

    def load_dataset(self, spec: dict[str, Any]) -> datasets.Dataset:
        dataset = self._call("trl_plus_load_dataset", spec=spec)
        if dataset is None:
            raise PluginError(f"no plugin could load dataset {spec.get('path')!r}")
        return dataset

    # lifecycle hooks
    def recipe_loaded(self, recipe: trl_plus.recipe.Recipe) -> None:
        self._call("trl_plus_recipe_loaded", recipe=recipe)

    def trainer_created(self, trainer: transformers.Trainer, recipe: trl_plus.recipe.Recipe | None = None) -> None:
        self._call("trl_plus_trainer_created", trainer=trainer, recipe=recipe)

    def rollout_scored(self, trainer: transformers.Trainer, step: int, prompts: list[str], completions: list[str],
                       rewards: dict[str, list[float | None]]) -> None:
        self._call(
            "trl_plus_rollout_scored", trainer=trainer, step=step, prompts=prompts, completions=completions, rewards=rewards
        )

    def step_end(self, trainer: transformers.Trainer, step: int, metrics: dict[str, float]) -> None:
        self._call("trl_plus_step_end", trainer=trainer, step=step, metrics=metrics)

    def evaluation_done(self, results: dict[str, Any], output_dir: str | None) -> None:
        self._call("trl_plus_evaluation_done", results=results, output_dir=output_dir)

    # -- introspection -----------------------------------------------------------------
    def describe_plugins(self) -> list[dict]:
        """Each plugin: name, version, and the components it adds (for ``trl-plus plugins``)."""
        from .version import __version__

        dists = {id(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        rows = {}
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            dist = dists.get(id(plugin))
            if dist is not None:
                version, package = dist.version, dist.metadata["name"]
            elif name.startswith("trl_plus."):
                version, package = __version__, "trl-plus"
            else:
                version, package = getattr(plugin, "__version__", ""), ""
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            rows[name] = {"name": name, "package": package, "version": version, "hooks": hooks, "components": {}}
        for kind in _KINDS:
            for info in self._registry(kind):
                rows[info.plugin]["components"].setdefault(kind, []).append(info.name)
        return list(rows.values())
