"""Loading the package's Lua scripts.

Scripts are ``.lua`` files in the package's ``lua/`` folder, shipped as
package data, read with
:mod:`importlib.resources`, and registered once per client with redis-py's
``register_script`` (which runs them with ``EVALSHA`` and reloads them after a
``NOSCRIPT`` error, e.g. once Redis has restarted).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocols import RedisClient, Script


@cache
def source(*names: str) -> str:
    """Return the concatenated source of the named ``.lua`` files.

    Shared helpers (``clock.lua``: Redis time; ``gcra.lua``: the token bucket)
    are prepended to the scripts that use them, since a Redis script cannot
    include another.
    """
    folder = files(__package__).joinpath("lua")
    return "\n".join(folder.joinpath(f"{name}.lua").read_text("utf-8") for name in names)


def register(client: RedisClient, *names: str) -> Script:
    """Register the script made of ``names`` on ``client``; return the callable."""
    return client.register_script(source(*names))
