"""Modules named after what they replace, so a user of one of those systems changes
import lines (and the constructor of the bus) and nothing else:

| module | replaces |
| --- | --- |
| :mod:`engram.compat.memu` | MemU's ``memu.events`` (``EventManager``, ``event_manager``) and ``memu.task_utils.validators`` |
| :mod:`engram.compat.nagatha` | Nagatha's ``core.event`` / ``core.event_bus`` (``EventBus``, ``Event``, ``EventPriority``, ``get_event_bus``) |
| :mod:`engram.compat.solstone` | solstone's ``apps.events`` (``on_event``, ``discover_handlers``, ``dispatch``, ``start_dispatcher``) |

Each is a thin layer over :class:`engram.EventBus`: names and signatures are translated,
behaviour lives once below. Where the log is not given to a constructor (module-level
singletons such as ``event_manager`` or ``get_event_bus()``), it is read from the
``ENGRAM_LOG`` environment variable (a log directory or an ``engram serve`` endpoint)
or set with the module's ``configure()``.
"""
import os
from typing import Union

from ..errors import InvalidArgument
from ..log import Log

__all__ = ["default_target"]


def default_target(given: Union[Log, str, "os.PathLike[str]", None] = None, *,
                   what: str = "the bus") -> Union[Log, str]:
    """``given`` (a Log as it is, a path as str), else $ENGRAM_LOG; raises InvalidArgument
    naming both when neither is set."""
    if isinstance(given, Log):
        return given
    t = os.fspath(given) if given else os.environ.get("ENGRAM_LOG")
    if not t:
        raise InvalidArgument(f"{what}: no log given: pass a log directory or endpoint, "
                              "set ENGRAM_LOG, or call configure(path) first")
    return t
