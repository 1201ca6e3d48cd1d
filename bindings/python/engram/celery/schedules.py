"""``celery.schedules`` names, so modules that build a beat schedule still import.

engram has no periodic scheduler yet: it comes with the schedules feature (the issue
after this one). Building a ``crontab`` or ``schedule`` works; handing a schedule to an app
(``conf.beat_schedule``) raises NotSupported, so nothing periodic is ever silently dropped.
"""
from __future__ import annotations

from typing import Any

__all__ = ["crontab", "schedule", "solar"]


class crontab:
    """A cron-style schedule description (kept, not run)."""

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*", **kw: Any) -> None:
        self.minute, self.hour, self.day_of_week = minute, hour, day_of_week
        self.day_of_month, self.month_of_year = day_of_month, month_of_year

    def __repr__(self) -> str:
        return (f"<crontab: {self.minute} {self.hour} {self.day_of_week} "
                f"{self.day_of_month} {self.month_of_year} (m/h/dM/MY/d)>")


class schedule:
    """An every-N-seconds schedule description (kept, not run)."""

    def __init__(self, run_every: Any, **kw: Any) -> None:
        self.run_every = run_every

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"


class solar(schedule):
    def __init__(self, event: str, lat: float, lon: float, **kw: Any) -> None:
        super().__init__(None)
        self.event, self.lat, self.lon = event, lat, lon
