"""``plugq dashboard``: serve the dashboard (one self-contained click command)."""

from __future__ import annotations

import ipaddress
import os
import socket

import click

from ..config import mask_url
from ..exceptions import ConfigurationError
from . import AUTH_ENV


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to them (``localhost``)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback
                                   for a in addresses)


@click.command("dashboard")
@click.option("--url", "-u", metavar="URL", default=None,
              help="Backend URL. Default: PLUGQ_URL, then [tool.plugq] url, then sqlite:///plugq.db.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --auth.")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=9181, show_default=True)
@click.option("--auth", metavar="USER:PASSWORD", default=None,
              help=f"HTTP Basic credentials (or set {AUTH_ENV}, which process lists do not show).")
@click.option("--read-only", is_flag=True, help="Show everything, allow no action.")
def dashboard(url: str | None, host: str, port: int, auth: str | None, read_only: bool) -> int:
    """Serve the web dashboard (needs the 'dashboard' extra)."""
    from ..config import current_settings, validate_url

    auth = auth or os.environ.get(AUTH_ENV) or None
    if not is_loopback(host) and not auth:
        raise ConfigurationError(
            f"refusing to serve on {host} without --auth USER:PASSWORD (or {AUTH_ENV}): "
            "anyone who can reach it could act on your jobs"
        )
    current_settings()
    if url:
        validate_url(url, where="--url")
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            "the dashboard needs the 'dashboard' extra: pip install 'plugq[dashboard]'"
        ) from None
    from . import create_app

    try:
        app = create_app(url, read_only=read_only, auth=auth)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    backend = app.state.dashboard.backend
    who = f"user {auth.partition(':')[0]!r} (password hidden)" if auth else "no authentication"
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"plugq dashboard on http://{shown}:{port}/ for {mask_url(backend.url)}; {who}"
               f"{'; read-only' if read_only else ''}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    return 0


def register(group: click.Group) -> None:
    """Add ``plugq dashboard`` to the ``plugq`` command group."""
    group.add_command(dashboard)
