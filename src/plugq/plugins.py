"""The plugin manager: entry points in, backends out.

Built-in backends are registered exactly as third-party ones are: through the
``plugq`` entry-point group. ``PLUGQ_DISABLE_PLUGINS=name,…`` blocks entry
points by name before they load.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .exceptions import PlugqError

if TYPE_CHECKING:
    from .backend import Backend
    from .storage import Storage

_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading entry points on first use."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("plugq")
            pm.add_hookspecs(hookspecs)
            for name in os.environ.get("PLUGQ_DISABLE_PLUGINS", "").split(","):
                if name.strip():
                    pm.set_blocked(name.strip())
            pm.load_setuptools_entrypoints("plugq")
            # A hook implementation with a misspelled name fails here, loudly.
            pm.check_pending()
            _pm = pm
        return _pm


def register(plugin: Any, name: str | None = None) -> str | None:
    """Register a plugin object or module at run time (tests, apps)."""
    pm = get_plugin_manager()
    result = pm.register(plugin, name=name)
    pm.check_pending()
    return result


def unregister(plugin: Any = None, name: str | None = None) -> None:
    """Remove a plugin registered with :func:`register`."""
    get_plugin_manager().unregister(plugin=plugin, name=name)


@dataclass(frozen=True)
class BackendEntry:
    """One registered URL scheme."""

    scheme: str
    factory: Callable[[str], Backend | Storage]
    plugin: str

    @property
    def version(self) -> str:
        """The plugin's distribution version ("" when unknown).

        Read from the distribution's metadata when asked for (``plugq backends``),
        not for every URL a process connects to: parsing METADATA costs time and
        memory a worker has no use for.
        """
        return _plugin_version(get_plugin_manager(), self.plugin)


class DuplicateSchemeError(PlugqError):
    """Two plugins registered the same URL scheme."""


def _plugin_version(pm: pluggy.PluginManager, plugin_name: str) -> str:
    for plugin, dist in pm.list_plugin_distinfo():
        if pm.get_name(plugin) == plugin_name:
            return str(getattr(dist, "version", "") or "")
    try:
        return metadata.version(plugin_name)
    except metadata.PackageNotFoundError:
        return ""


def backends() -> dict[str, BackendEntry]:
    """Every registered scheme, asking each plugin in turn.

    Raises:
        DuplicateSchemeError: two plugins claim one scheme (both are named).
    """
    pm = get_plugin_manager()
    found: dict[str, BackendEntry] = {}
    for impl in pm.hook.plugq_register_backends.get_hookimpls():
        plugin_name = impl.plugin_name

        def register_one(
            scheme: str, factory: Callable[[str], Backend | Storage], _p: str = plugin_name
        ) -> None:
            scheme = scheme.lower()
            if scheme in found and found[scheme].plugin != _p:
                raise DuplicateSchemeError(
                    f"URL scheme {scheme!r} is registered by two plugins: "
                    f"{found[scheme].plugin!r} and {_p!r}; disable one with "
                    f"PLUGQ_DISABLE_PLUGINS={_p}"
                )
            found[scheme] = BackendEntry(scheme, factory, _p)

        impl.function(register=register_one)
    return found


def hook() -> Any:
    """The hook caller (``hook().plugq_job_enqueued(job=…)``)."""
    return get_plugin_manager().hook
