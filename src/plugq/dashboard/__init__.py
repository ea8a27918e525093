"""A web dashboard for every backend: ``plugq dashboard`` or :func:`create_app` (ASGI).

Needs the ``dashboard`` extra (``pip install 'plugq[dashboard]'``). Built on
the public API only (queues, registries, ``Job``, ``Worker.all()``), so it
shows memory, SQLite and Redis stores alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..backend import Backend

#: The environment variable the credentials can come from (``USER:PASSWORD``),
#: so that they do not show in process lists as a ``--auth`` argument would.
AUTH_ENV = "PLUGQ_DASHBOARD_AUTH"


def create_app(url: str | Backend | None = None, *, read_only: bool = False,
               auth: str | tuple[str, str] | None = None) -> Starlette:
    """The dashboard as an ASGI application, to serve or mount in another one.

    ``url`` is resolved as everywhere in plugq (argument, ``PLUGQ_URL``,
    ``[tool.plugq] url``, the default), or is a backend already connected.
    ``auth`` (``"USER:PASSWORD"``) turns on HTTP Basic authentication;
    ``read_only`` hides and refuses every action.

    Raises:
        ConfigurationError: the ``dashboard`` extra is not installed.
        ValueError: ``auth`` is not ``USER:PASSWORD``.
    """
    try:
        from ._app import create_app as _create_app
    except ImportError as exc:
        from ..exceptions import ConfigurationError

        raise ConfigurationError(
            f"the dashboard needs the 'dashboard' extra: pip install 'plugq[dashboard]' ({exc})"
        ) from None
    return _create_app(url, read_only=read_only, auth=auth)



__all__ = ["AUTH_ENV", "create_app"]
