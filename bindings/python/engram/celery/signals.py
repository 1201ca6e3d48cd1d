"""``celery.signals`` that engram's workers send (defined in :mod:`engram._signals`, where
the task layer sends them from)."""
from .._signals import *  # noqa: F401,F403
from .._signals import __all__  # noqa: F401
