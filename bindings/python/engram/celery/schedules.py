"""``celery.schedules``: :class:`crontab` and :class:`schedule` with Celery's meaning, for
``conf.beat_schedule`` and ``app.add_periodic_task`` (see :mod:`engram.celery.beat`).

A ``crontab`` expands its fields exactly as Celery does (``'*/15'``, ``'1-5'``,
``'mon-fri'``, ``'9,17'``, ints, sets; day of week 0-6 with Sunday 0; day of month 1-31;
month 1-12 or jan-dec) and becomes a 5-field cron expression read in the app's timezone
(:meth:`crontab.cron`). A ``schedule`` (or a number of seconds, or a timedelta) becomes an
engram interval schedule. ``solar`` exists so modules import; handing one to an app raises
NotSupported.
"""
from __future__ import annotations

import datetime as _dt
import numbers
import re
from typing import Any, Callable, Iterable, List, Optional, Set, Union

__all__ = ["crontab", "schedule", "solar", "crontab_parser", "ParseException", "maybe_schedule"]

Cronspec = Union[int, str, Iterable[int]]

_DAYNAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTHNAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


class ParseException(Exception):
    """A crontab field that cannot be parsed (Celery's ``crontab_parser.ParseException``)."""


class crontab_parser:
    """Celery's crontab field parser: ``crontab_parser(60).parse('*/15')`` ->
    ``{0, 15, 30, 45}``; ``crontab_parser(31, 1)`` for 1-based fields. Grammar: groups of
    ``*`` or a range ``a-b`` (wrapping past the maximum), each with an optional ``/step``,
    separated by commas; numbers or day / month names."""

    _range = r"(\w+?)-(\w+)"
    _steps = r"/(\w+)?"
    _star = r"\*"

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_, self.min_ = max_, min_
        self.pats = (
            (re.compile(self._range + self._steps), self._range_steps),
            (re.compile(self._range), self._expand_range),
            (re.compile(self._star + self._steps), self._star_steps),
            (re.compile("^" + self._star + "$"), self._expand_star),
        )

    def parse(self, spec: str) -> Set[int]:
        acc: Set[int] = set()
        for part in spec.split(","):
            if not part:
                raise ParseException("empty part")
            acc |= set(self._parse_part(part))
        return acc

    def _parse_part(self, part: str) -> List[int]:
        for regex, handler in self.pats:
            m = regex.match(part)
            if m:
                return handler(m.groups())  # type: ignore[operator, no-any-return]
        return self._expand_range((part,))

    def _expand_range(self, toks: Any) -> List[int]:
        fr = self._expand_number(toks[0])
        if len(toks) > 1:
            to = self._expand_number(toks[1])
            if to < fr:  # wraps around the maximum
                return list(range(fr, self.min_ + self.max_)) + list(range(self.min_, to + 1))
            return list(range(fr, to + 1))
        return [fr]

    def _range_steps(self, toks: Any) -> List[int]:
        if len(toks) != 3 or not toks[2]:
            raise ParseException("empty filter")
        return self._expand_range(toks[:2])[::int(toks[2])]

    def _star_steps(self, toks: Any) -> List[int]:
        if not toks or not toks[0]:
            raise ParseException("empty filter")
        return self._expand_star()[::int(toks[0])]

    def _expand_star(self, *args: Any) -> List[int]:
        return list(range(self.min_, self.max_ + self.min_))

    def _expand_number(self, s: str) -> int:
        if isinstance(s, str) and s[:1] == "-":
            raise ParseException("negative numbers not supported")
        try:
            i = int(s)
        except ValueError:
            low = s[0:3].lower()  # Celery tries month names, then day names, in any field
            if low in _MONTHNAMES:
                i = _MONTHNAMES.index(low) + 1
            elif low in _DAYNAMES:
                i = _DAYNAMES.index(low)
            else:
                raise ValueError(f"Invalid weekday literal {s!r}.") from None
        max_val = self.min_ + self.max_ - 1
        if i > max_val:
            raise ValueError(f"Invalid end range: {i} > {max_val}.")
        if i < self.min_:
            raise ValueError(f"Invalid beginning range: {i} < {self.min_}.")
        return i


def _expand(spec: Cronspec, max_: int, min_: int = 0) -> Set[int]:
    if isinstance(spec, bool):
        raise TypeError("a crontab field is an int, a str or an iterable of ints, not a bool")
    if isinstance(spec, int):
        result = {spec}
    elif isinstance(spec, str):
        result = crontab_parser(max_, min_).parse(spec)
    elif isinstance(spec, Iterable):
        result = set(spec)  # type: ignore[arg-type]  # (a str was handled above)
    else:
        raise TypeError("Argument cronspec needs to be of any of the following types: int, str, "
                        f"or an iterable type. {type(spec)!r} was given.")
    for n in result:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"crontab: {n!r} is not an int")
        if n >= max_ + min_ or n < min_:
            raise ValueError(f"Invalid crontab pattern.  Valid range is {min_}-{max_ - 1 + min_}. "
                             f"'{n}' was found.")
    return result


def _field(values: Set[int], max_: int, min_: int = 0) -> str:
    """The cron text of an expanded field: ``*``, ``*/n``, or ranges and values."""
    full = list(range(min_, max_ + min_))
    vs = sorted(values)
    if vs == full:
        return "*"
    for step in range(2, max_):
        if vs == full[::step]:
            return f"*/{step}"
    parts, i = [], 0
    while i < len(vs):
        j = i
        while j + 1 < len(vs) and vs[j + 1] == vs[j] + 1:
            j += 1
        parts.append(str(vs[i]) if j == i else f"{vs[i]}-{vs[j]}")
        i = j + 1
    return ",".join(parts)


class crontab:
    """Celery's cron-like schedule: ``crontab(minute=0, hour='*/3')``,
    ``crontab(hour=7, minute=30, day_of_week='mon-fri')``. Fields left out are ``'*'``:
    ``crontab(hour=2)`` runs every minute from 02:00 to 02:59, as in Celery. The times are
    read in the app's ``timezone`` (UTC when unset)."""

    def __init__(self, minute: Cronspec = "*", hour: Cronspec = "*", day_of_week: Cronspec = "*",
                 day_of_month: Cronspec = "*", month_of_year: Cronspec = "*",
                 **kwargs: Any) -> None:
        self._orig_minute = "*" if minute is None else minute
        self._orig_hour = "*" if hour is None else hour
        self._orig_day_of_week = "*" if day_of_week is None else day_of_week
        self._orig_day_of_month = "*" if day_of_month is None else day_of_month
        self._orig_month_of_year = "*" if month_of_year is None else month_of_year
        self._orig_kwargs = kwargs
        for k in kwargs:
            if k not in ("nowfun", "app"):
                raise TypeError(f"crontab() got an unexpected keyword argument {k!r}")
        self.nowfun: Optional[Callable[[], _dt.datetime]] = kwargs.get("nowfun")
        self.app = kwargs.get("app")
        self.minute = _expand(self._orig_minute, 60)
        self.hour = _expand(self._orig_hour, 24)
        self.day_of_week = _expand(self._orig_day_of_week, 7)
        self.day_of_month = _expand(self._orig_day_of_month, 31, 1)
        self.month_of_year = _expand(self._orig_month_of_year, 12, 1)

    @classmethod
    def from_string(cls, crontab: str) -> "crontab":
        """``crontab.from_string('0 2 * * *')``: minute hour day-of-month month day-of-week."""
        minute, hour, day_of_month, month_of_year, day_of_week = crontab.split(" ")
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def cron(self) -> str:
        """The 5-field cron expression (minute hour day-of-month month day-of-week) that
        fires at the same times. Celery runs a day only when it matches both a restricted
        day of month and a restricted day of week, cron when it matches either: a crontab
        restricting both raises NotSupported."""
        dom, dow = _field(self.day_of_month, 31, 1), _field(self.day_of_week, 7)
        if dom != "*" and dow != "*":
            from ..errors import NotSupported
            raise NotSupported(
                f"{self!r}: restricts both day_of_month and day_of_week; Celery runs on the "
                "days matching both, engram's cron (as cron(8)) on the days matching either: "
                "restrict one of them and test the other in the task")
        return " ".join((_field(self.minute, 60), _field(self.hour, 24), dom,
                         _field(self.month_of_year, 12, 1), dow))

    def __repr__(self) -> str:
        return (f"<crontab: {self._orig_minute} {self._orig_hour} {self._orig_day_of_month} "
                f"{self._orig_month_of_year} {self._orig_day_of_week} (m/h/dM/MY/d)>")

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, crontab):
            return (other.month_of_year == self.month_of_year
                    and other.day_of_month == self.day_of_month
                    and other.day_of_week == self.day_of_week
                    and other.hour == self.hour and other.minute == self.minute)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((frozenset(self.minute), frozenset(self.hour), frozenset(self.day_of_week),
                     frozenset(self.day_of_month), frozenset(self.month_of_year)))


_TIME_UNITS = (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0))


def _humanize(secs: float) -> str:
    for unit, divider in _TIME_UNITS:
        if secs >= divider:
            w = secs / float(divider)
            return f"{w:.2f} {unit}{'' if w == 1 else 's'}"
    return f"{secs:.2f} seconds" if secs > 0 else "now"


class schedule:
    """Every ``run_every`` (seconds or a timedelta). engram fires it on multiples of the
    interval since the Unix epoch (UTC): every 300 s at :00, :05, :10 ... of each hour,
    in every process alike. ``relative=True`` (Celery's rounding to the interval's unit)
    raises NotSupported when handed to an app."""

    def __init__(self, run_every: Union[float, _dt.timedelta, None] = None, relative: bool = False,
                 nowfun: Optional[Callable[[], _dt.datetime]] = None, app: Any = None) -> None:
        if isinstance(run_every, numbers.Real) and not isinstance(run_every, bool):
            run_every = _dt.timedelta(seconds=float(run_every))
        if run_every is not None and not isinstance(run_every, _dt.timedelta):
            raise TypeError(f"schedule(run_every={run_every!r}): expected seconds or a timedelta")
        self.run_every = run_every
        self.relative = relative
        self.nowfun = nowfun
        self.app = app

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds() if self.run_every is not None else 0.0

    @property
    def human_seconds(self) -> str:
        return _humanize(self.seconds)

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, schedule):
            return bool(self.run_every == other.run_every)
        return bool(self.run_every == other)

    def __hash__(self) -> int:
        return hash(self.run_every)


class solar(schedule):
    """Celery's sunrise/sunset schedule: it can be built, but engram has no solar
    schedules (an app refuses it with NotSupported)."""

    def __init__(self, event: str, lat: float, lon: float, **kw: Any) -> None:
        super().__init__(None)
        self.event, self.lat, self.lon = event, lat, lon

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"


def maybe_schedule(s: Any, relative: bool = False, app: Any = None) -> Any:
    """Celery's helper: a number or timedelta becomes a :class:`schedule`."""
    if s is not None:
        if isinstance(s, numbers.Real) and not isinstance(s, bool):
            s = _dt.timedelta(seconds=float(s))
        if isinstance(s, _dt.timedelta):
            return schedule(s, relative, app=app)
    return s
