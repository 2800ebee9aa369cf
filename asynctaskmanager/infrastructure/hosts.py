"""Several hosts in one MySQL URL, for a cluster whose nodes all serve the same database.

SQLAlchemy's :class:`~sqlalchemy.URL` holds one host. A URL naming several,
``mysql://user@h1:3311,h2:3312,h3:3313/db`` (or the comma-separated list of whole node URLs
that ``scripts/galera-cluster`` prints), becomes the first host's URL with the whole list in
its ``hosts`` query argument (``?hosts=h1:3311,h2:3312,h3:3313``, which may also be written
directly); the MySQL dialect module then connects to the first of them that answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import URL, make_url

from asynctaskmanager.errors import ConfigurationError

HOSTS_QUERY = "hosts"
DEFAULT_PORT = 3306

_MULTI_HOST = re.compile(
    r"^(?P<scheme>[\w+.-]+)://(?P<auth>[^@/?]*@)?(?P<hosts>[^/?@]*,[^/?@]*)(?P<rest>[/?].*)?$"
)


def multi_host_url(target: str) -> URL | None:
    """The URL of ``target`` with its hosts in the ``hosts`` argument, or None when it names
    one host."""
    if "," not in target:
        return None
    if target.count("://") > 1:
        return _from_node_urls(target)
    match = _MULTI_HOST.match(target)
    if match is None:
        return None
    hosts = [f"{host}:{port}" for host, port in parse_hosts(match["hosts"])]
    first = f"{match['scheme']}://{match['auth'] or ''}{hosts[0]}{match['rest'] or ''}"
    return with_hosts(make_url(first), hosts)


def _from_node_urls(target: str) -> URL:
    urls = [make_url(part.strip()) for part in target.split(",") if part.strip()]
    first = urls[0]
    for url in urls[1:]:
        if url.set(host=first.host, port=first.port) != first:
            raise ConfigurationError(
                "the URLs of a cluster's nodes may differ only in host and port: "
                f"{url.render_as_string()} vs {first.render_as_string()}"
            )
    return with_hosts(first, [_address(url) for url in urls])


def _address(url: URL) -> str:
    return f"{url.host or 'localhost'}:{url.port or DEFAULT_PORT}"


def with_hosts(url: URL, hosts: Sequence[str]) -> URL:
    """``url`` on the first of ``hosts``, with all of them in its ``hosts`` argument."""
    addresses = parse_hosts(",".join(hosts))
    host, port = addresses[0]
    listed = ",".join(f"{h}:{p}" for h, p in addresses)
    return url.set(host=host, port=port).update_query_dict({HOSTS_QUERY: listed})


def parse_hosts(listed: str) -> list[tuple[str, int]]:
    """``"h1:3311,h2"`` as ``[("h1", 3311), ("h2", 3306)]``."""
    addresses = []
    for part in listed.split(","):
        host, _, port = part.strip().rpartition(":") if ":" in part else (part.strip(), "", "")
        if not host:
            raise ConfigurationError(f"not a host or host:port in the host list: {part!r}")
        try:
            number = int(port) if port else DEFAULT_PORT
        except ValueError:
            raise ConfigurationError(f"not a port in the host list: {part!r}") from None
        if not 0 < number < 65536:
            raise ConfigurationError(f"not a port in the host list: {part!r}")
        addresses.append((host, number))
    return addresses
