"""Plugin discovery and per-backend hook routing.

Plugins come from the ``delegate_sdk`` entry-point group and, for in-tree
development and tests, from ``DELEGATE_SDK_PLUGINS`` (a comma-separated list of
``name=package.module`` or ``name=package.module:attribute``), which is also
inherited by conformance worker processes.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import replace
from typing import Any

import pluggy

from delegate_sdk import hookspecs
from delegate_sdk.errors import PluginError, BackendUnavailableError, PluginLoadError, UnknownBackendError
from delegate_sdk.types import BackendInfo

log = logging.getLogger(__name__)

ENV_VAR = "DELEGATE_SDK_PLUGINS"
REQUIRED_HOOKS = ("describe", "claim", "preprocess", "init", "execute")


class Backend:
    """One registered plugin, with its hooks bound so that only it is called."""

    def __init__(self, pm: pluggy.PluginManager, name: str, plugin: Any):
        self.name = name
        self.plugin = plugin
        others = [p for p in pm.get_plugins() if p is not plugin]
        self.hook = _SubsetHooks(pm, others)
        self._info: BackendInfo | None = None

    def info(self) -> BackendInfo:
        if self._info is None:
            try:
                info = self.hook.call("describe")
            except Exception as e:  # a plugin whose describe raises is unavailable, not fatal
                log.debug("describe of %s raised", self.name, exc_info=True)
                info = BackendInfo(name=self.name, version="?", precisions=("fp32",), default_precision="fp32",
                                   blob_format="?", blob_format_version=0, loadable_format_versions=(0, 0),
                                   available=False, unavailable_reason=f"describe() raised {type(e).__name__}: {e}")
            if not isinstance(info, BackendInfo):
                raise PluginLoadError(f"plugin {self.name!r}: describe() returned {type(info).__name__}, "
                                      "expected delegate_sdk.BackendInfo")
            if info.name != self.name:
                info = replace(info, name=self.name)
            try:
                info.check()
            except ValueError as e:
                # refused here, at load, rather than judged under a guessed meaning later
                info = replace(info, available=False,
                               unavailable_reason=f"plugin {self.name!r} is invalid: {e}")
            self._info = info
        return self._info

    def options(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """``given`` checked option by option against the plugin's ``OptionSpec`` list, defaults filled in,
        then as a combination by its ``validate_options`` hook; OptionError (exit 2) names what is wrong."""
        from delegate_sdk.errors import OptionError
        from delegate_sdk.options import validate_options

        opts = validate_options(self.require_available(), given)
        if self.implements("validate_options"):
            try:
                self.hook.call("validate_options", options=dict(opts))
            except (ValueError, OptionError) as e:
                raise OptionError(f"{self.name}: {e}") from e
            except Exception as e:
                raise PluginError(self.name, "validate_options", f"{type(e).__name__}: {e}") from e
        return opts

    def implements(self, hook_name: str) -> bool:
        return any(impl.plugin is self.plugin for impl in getattr(self.hook.pm.hook, hook_name).get_hookimpls())

    def direct(self, hook_name: str) -> Any:
        """This plugin's implementation of a hook as a plain callable taking keyword arguments."""
        impls = [i for i in getattr(self.hook.pm.hook, hook_name).get_hookimpls() if i.plugin is self.plugin]
        if len(impls) != 1 or impls[0].hookwrapper or impls[0].wrapper:
            return lambda **kw: self.hook.call(hook_name, **kw)
        fn, names = impls[0].function, impls[0].argnames

        def call(**kwargs: Any) -> Any:
            return fn(*(kwargs[n] for n in names))
        return call

    def require_available(self) -> BackendInfo:
        info = self.info()
        if not info.available:
            raise BackendUnavailableError(self.name, info.unavailable_reason or "no reason given")
        return info


class _SubsetHooks:
    def __init__(self, pm: pluggy.PluginManager, others: list[Any]):
        self.pm = pm
        self._others = others
        self._callers: dict[str, Any] = {}

    def call(self, hook_name: str, **kwargs: Any) -> Any:
        caller = self._callers.get(hook_name)
        if caller is None:
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=self._others)
            self._callers[hook_name] = caller
        return caller(**kwargs)


class Registry:
    """The plugin manager plus the backends registered in it."""

    def __init__(self, *, load_entry_points: bool = True, load_env: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._plugins: dict[str, Any] = {}
        self._backends: dict[str, Backend] = {}
        if load_entry_points:
            self._load_entry_points()
        if load_env:
            self._load_env()

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=hookspecs.PROJECT):
            if ep.name in self._plugins:
                continue
            dist = getattr(getattr(ep, "dist", None), "name", None)
            fix = f"fix it, or remove it with `pip uninstall {dist}`" if dist else "fix it, or uninstall it"
            self._load_one(ep.name, ep.value, ep.load, fix)

    def _load_env(self) -> None:
        spec = os.environ.get(ENV_VAR, "").strip()
        for item in filter(None, (s.strip() for s in spec.split(","))):
            if "=" not in item:
                raise PluginLoadError(f"{ENV_VAR}: entry {item!r} must look like name=package.module[:attribute]")
            name, target = (s.strip() for s in item.split("=", 1))
            self._load_one(name, target, lambda t=target: load_object(t), f"fix it, or drop it from {ENV_VAR}")

    def _load_one(self, name: str, target: str, load: Any, fix: str) -> None:
        """Import and register one plugin. One broken plugin must not take the others (or
        ``delegate-sdk plugins``) down: it is listed as unavailable, with one line saying what is wrong."""
        try:
            plugin = load()
        except Exception as e:
            cause = e.__cause__ if isinstance(e, PluginLoadError) and e.__cause__ else e
            where = ""
            if isinstance(cause, SyntaxError) and cause.filename:
                where = f" at {cause.filename}:{cause.lineno}"
            reason = (f"plugin {name!r} ({target}) could not be imported: {type(cause).__name__}{where}: "
                      f"{_one_line(cause) if not isinstance(cause, SyntaxError) else cause.msg}; {fix}")
            log.warning("%s", reason)
            self._register_broken(name, reason)
            return
        try:
            self.register(plugin, name)
        except PluginLoadError as e:
            log.warning("%s", e)
            self._register_broken(name, f"{e}; {fix}")

    def _register_broken(self, name: str, reason: str) -> None:
        class _Broken:
            @hookspecs.hookimpl
            def describe(self) -> BackendInfo:
                return BackendInfo(name=name, version="?", precisions=("fp32",), default_precision="fp32",
                                   blob_format="?", blob_format_version=0, loadable_format_versions=(0, 0),
                                   available=False, unavailable_reason=reason)

        self._plugins[name] = _Broken()
        self.pm.register(self._plugins[name], name=f"{name}-broken")
        self._backends.clear()

    def register(self, plugin: Any, name: str) -> None:
        """Register ``plugin`` as backend ``name``; raises PluginLoadError naming what is wrong."""
        if name in self._plugins:
            if self._plugins[name] is plugin:
                return
            self.unregister(name)
        try:
            self.pm.register(plugin, name=name)
        except ValueError as e:
            raise PluginLoadError(f"plugin {name!r} could not be registered: {e}") from None
        except pluggy.PluginValidationError as e:
            self.pm.unregister(name=name) if self.pm.has_plugin(name) else None
            raise PluginLoadError(f"plugin {name!r} is invalid: {_one_line(e)}") from None
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            self.pm.unregister(plugin)
            raise PluginLoadError(f"plugin {name!r} implements a hook the contract does not define "
                                  f"(misspelled?): {_one_line(e)}. Valid hooks: {', '.join(hook_names())}") from None
        hooked = {hc.name for hc in (self.pm.get_hookcallers(plugin) or [])}
        missing = [h for h in REQUIRED_HOOKS if h not in hooked]
        if missing:
            self.pm.unregister(plugin)
            unmarked = [h for h in missing if callable(getattr(plugin, h, None))]
            hint = (f": {', '.join(unmarked)} {'is' if len(unmarked) == 1 else 'are'} defined but not marked "
                    "with @delegate_sdk.hookimpl" if unmarked else "")
            raise PluginLoadError(f"plugin {name!r} does not implement the required hook(s) "
                                  f"{', '.join(missing)}{hint}")
        self._plugins[name] = plugin
        self._backends.clear()

    def unregister(self, name: str) -> None:
        plugin = self._plugins.pop(name, None)
        if plugin is not None and self.pm.is_registered(plugin):
            self.pm.unregister(plugin)
        self._backends.clear()

    def names(self) -> list[str]:
        return list(self._plugins)

    def get(self, name: str) -> Backend:
        if name not in self._plugins:
            raise UnknownBackendError(name, self.names())
        if not self._backends:
            self._backends = {n: Backend(self.pm, n, p) for n, p in self._plugins.items()}
        return self._backends[name]

    def all(self) -> list[Backend]:
        return [self.get(n) for n in sorted(self._plugins)]


def _one_line(e: BaseException) -> str:
    return "; ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())


def hook_names() -> list[str]:
    return [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "delegate_sdk_spec")]


def load_object(target: str) -> Any:
    """Import ``package.module`` or ``package.module:attribute`` (attribute may be dotted)."""
    mod_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise PluginLoadError(f"cannot load plugin {target!r}: {e}") from None
    return obj


_default: Registry | None = None
_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry, created on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = Registry()
        return _default


def reset_default_registry() -> None:
    """Forget the process-wide registry (tests; after installing a plugin at run time)."""
    global _default
    with _lock:
        _default = None
