"""Input checks for memory events, to run before anything is appended: URL scheme
allow-list, refusal of URLs that point at loopback / private / link-local addresses
(SSRF) or hold ``..`` (path traversal), modality allow-list, user id and size limits. Each failure raises
:class:`engram.ValidationError` (an ``InvalidArgument``, so a ``ValueError``) with a
message naming the field.

    validator = engram.MemoryValidator(max_text_bytes=16_384)
    manager = engram.EventManager(log, validator=validator)   # emit() checks first
    validator.check("memory.saved", {"user_id": "u1", "text": "...", "url": "https://..."})
"""
from __future__ import annotations

import ipaddress
import json
import re
import socket
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit

from .errors import InvalidArgument, ValidationError

__all__ = [
    "validate_url", "check_address", "validate_modality", "validate_user_id", "validate_size",
    "validate_memory_event", "MemoryValidator", "DEFAULT_SCHEMES", "DEFAULT_MODALITIES",
]

DEFAULT_SCHEMES: Tuple[str, ...] = ("http", "https")
DEFAULT_MODALITIES: Tuple[str, ...] = ("text", "conversation", "document", "image", "audio", "video")
# Names that only mean something inside a network: refused like private addresses.
INTERNAL_SUFFIXES: Tuple[str, ...] = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
USER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+\-]*")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Resolver = Callable[..., List[Tuple[Any, ...]]]


def check_address(addr: Union[str, IPAddress], *, what: str = "address") -> IPAddress:
    """Raises ValidationError unless ``addr`` is a public unicast address: refuses
    loopback, private, link-local, multicast, reserved, unspecified and shared (CGNAT)
    ranges, including IPv4 addresses embedded in IPv6 (mapped, 6to4, Teredo)."""
    try:
        ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
    except ValueError:
        raise ValidationError(f"{what}: {addr!r} is not an IP address") from None
    inner: List[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        for emb in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None):
            if emb is not None:
                inner.append(emb)
    for a in inner:
        kinds = [("loopback", a.is_loopback), ("unspecified", a.is_unspecified), ("private", a.is_private),
                 ("link-local", a.is_link_local), ("multicast", a.is_multicast),
                 ("reserved", a.is_reserved)]
        if isinstance(a, ipaddress.IPv4Address):
            kinds.append(("shared", a in ipaddress.IPv4Network("100.64.0.0/10")))
        for name, hit in kinds:
            if hit:
                why = ("access to localhost is not allowed" if name in ("loopback", "unspecified")
                       else "access to private IP ranges is not allowed")
                raise ValidationError(f"{what}: {a} is a {name} address ({why})")
        if not a.is_global:
            raise ValidationError(f"{what}: {a} is not a public address")
    return ip


def validate_url(url: str, *, schemes: Sequence[str] = DEFAULT_SCHEMES, resolve: bool = True,
                 resolver: Optional[Resolver] = None, max_length: int = 2048,
                 unresolved: str = "accept") -> str:
    """Checks a URL a worker will fetch: at most ``max_length`` characters, its scheme in
    ``schemes``, a host, no ``..`` in the host or path, and neither the host (an IP
    literal, "localhost", a single-label or internal name) nor, with ``resolve``, any
    address it resolves to is loopback / private / link-local / otherwise non-public.
    Returns the URL.

    A host name that cannot be resolved (no such name, or no DNS where this runs: the two
    look alike to getaddrinfo) is accepted with ``unresolved="accept"`` (default) - it
    passed every other check, and the worker must check the address it connects to
    anyway, since DNS answers can change between now and the fetch - or refused with
    ``unresolved="refuse"``."""
    if unresolved not in ("accept", "refuse"):
        raise InvalidArgument(f"unresolved {unresolved!r}: use 'accept' or 'refuse'")
    if not isinstance(url, str):
        raise ValidationError(f"url must be a str, got {type(url).__name__}")
    if not url:
        raise ValidationError("url: empty")
    if len(url) > max_length:
        raise ValidationError(f"url: {len(url)} characters exceeds maximum length of {max_length}")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise ValidationError("url: contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValidationError(f"url: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in {s.lower() for s in schemes}:
        raise ValidationError(f"url: Invalid URL scheme {scheme or '(none)'!r} (allowed: {', '.join(schemes)})")
    host = parts.hostname
    if not host:
        raise ValidationError("url: URL must include a hostname")
    if ".." in parts.netloc or ".." in parts.path or ".." in unquote(parts.path):
        raise ValidationError("url: Path traversal detected ('..' in the host or path)")
    name = host.rstrip(".").lower()
    if name in ("localhost", "localhost.localdomain") or name.endswith(".localhost"):
        raise ValidationError(f"url: host {host!r} is loopback (access to localhost is not allowed)")
    literal: Optional[IPAddress] = None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        # Hosts like "2130706433" or "0x7f.1" are IP addresses to some resolvers.
        if re.fullmatch(r"[0-9.]+|0x[0-9a-f.x]+", name):
            raise ValidationError(f"url: host {host!r} is a numeric address in an unusual form") from None
    if literal is not None:
        check_address(literal, what=f"url host {host}")
        return url
    if "." not in name or name.endswith(INTERNAL_SUFFIXES):
        raise ValidationError(f"url: host {host!r} is an internal name (access to private hosts is not allowed)")
    if resolve:
        res = resolver or socket.getaddrinfo
        try:
            infos = res(host, port or (443 if scheme == "https" else 80), type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as e:
            if unresolved == "refuse":
                raise ValidationError(f"url: host {host!r} does not resolve: {e}") from None
            return url
        if not infos:
            if unresolved == "refuse":
                raise ValidationError(f"url: host {host!r} has no address")
            return url
        for info in infos:
            check_address(info[4][0].split("%")[0], what=f"url host {host} resolves to")
    return url


def validate_modality(modality: str, allowed: Iterable[str] = DEFAULT_MODALITIES) -> str:
    """Checks ``modality`` is one of ``allowed``; returns it."""
    allowed = tuple(allowed)
    if not isinstance(modality, str) or modality not in allowed:
        raise ValidationError(f"modality {modality!r} not allowed (allowed: {', '.join(allowed)})")
    return modality


def validate_user_id(user_id: str, *, max_length: int = 128,
                     pattern: "re.Pattern[str]" = USER_ID_RE) -> str:
    """Checks a user id: a str of 1..``max_length`` characters matching ``pattern``
    (letters, digits and ``_ . : @ / + -``, starting with a letter or digit)."""
    if not isinstance(user_id, str):
        raise ValidationError(f"user_id must be a str, got {type(user_id).__name__}")
    if not 1 <= len(user_id) <= max_length:
        raise ValidationError(f"user_id: length {len(user_id)} outside 1..{max_length}")
    if not pattern.fullmatch(user_id):
        raise ValidationError(f"user_id {user_id!r}: only letters, digits and _ . : @ / + - allowed")
    return user_id


def validate_size(value: Any, max_bytes: int, *, what: str = "payload") -> int:
    """Checks the encoded size of ``value`` (bytes as they are, str as UTF-8, anything
    else as compact JSON) is at most ``max_bytes``; returns the size."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        n = len(value)
    elif isinstance(value, str):
        n = len(value.encode("utf-8"))
    else:
        try:
            n = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())
        except (TypeError, ValueError) as e:
            raise ValidationError(f"{what}: not JSON-serialisable: {e}") from None
    if n > max_bytes:
        raise ValidationError(f"{what}: {n} bytes over the limit of {max_bytes}")
    return n


class MemoryValidator:
    """Checks memory events (``memory.saved`` / ``updated`` / ``deleted`` / ``queried``)
    before they are appended. Call it as ``validator(event_type, data)``. ``event_types``
    defaults to the dotted memory events and MemU's ``on_memory_*`` names."""

    URL_FIELDS = ("url", "resource_url", "source_url", "image_url", "audio_url", "video_url", "document_url")

    def __init__(self, *, schemes: Sequence[str] = DEFAULT_SCHEMES,
                 modalities: Iterable[str] = DEFAULT_MODALITIES, max_event_bytes: int = 256 * 1024,
                 max_text_bytes: int = 64 * 1024, max_user_id: int = 128, resolve: bool = True,
                 resolver: Optional[Resolver] = None, require_user_id: bool = True,
                 unresolved: str = "accept",
                 event_types: Optional[Iterable[str]] = ("memory.saved", "memory.updated",
                                                         "memory.deleted", "memory.queried",
                                                         "on_memory_saved", "on_memory_updated",
                                                         "on_memory_deleted", "on_memory_queried")) -> None:
        self.schemes = tuple(schemes)
        self.modalities = tuple(modalities)
        self.max_event_bytes = max_event_bytes
        self.max_text_bytes = max_text_bytes
        self.max_user_id = max_user_id
        self.resolve = resolve
        self.resolver = resolver
        self.require_user_id = require_user_id
        self.unresolved = unresolved
        self.event_types = None if event_types is None else tuple(event_types)

    def __call__(self, event_type: str, data: Any) -> Any:
        return self.check(event_type, data)

    def check(self, event_type: str, data: Any) -> Any:
        """Raises ValidationError for the first problem; returns ``data`` when fine."""
        if not isinstance(event_type, str):
            raise ValidationError(f"event type must be a str, got {type(event_type).__name__}")
        if self.event_types is not None and event_type not in self.event_types:
            raise ValidationError(f"event type {event_type!r} not allowed")
        if not isinstance(data, Mapping):
            raise ValidationError(f"{event_type}: data must be a JSON object (dict), got {type(data).__name__}")
        validate_size(dict(data), self.max_event_bytes, what=f"{event_type} event")
        user = data.get("user")
        if user is not None:
            # MemU's shape: {"user": {"user_id": ...}}
            if not isinstance(user, Mapping) or "user_id" not in user:
                raise ValidationError(f"{event_type}: user: user_id is required in user dict")
            validate_user_id(user["user_id"], max_length=self.max_user_id)
        if "user_id" in data or (self.require_user_id and user is None):
            if "user_id" not in data:
                raise ValidationError(f"{event_type}: user_id is required")
            validate_user_id(data["user_id"], max_length=self.max_user_id)
        for f in ("text", "query"):
            if f in data and data[f] is not None:
                if not isinstance(data[f], str):
                    raise ValidationError(f"{event_type}: {f} must be a str")
                validate_size(data[f], self.max_text_bytes, what=f"{event_type} {f}")
        if "modality" in data:
            validate_modality(data["modality"], self.modalities)
        for f in self.URL_FIELDS:
            if f in data and data[f] is not None:
                try:
                    validate_url(data[f], schemes=self.schemes, resolve=self.resolve, resolver=self.resolver,
                                 unresolved=self.unresolved)
                except ValidationError as e:
                    raise ValidationError(f"{event_type}: {f}: {e}") from None
        return data


def validate_memory_event(event_type: str, data: Any, **options: Any) -> Any:
    """One-off check with a :class:`MemoryValidator` built from ``options``."""
    return MemoryValidator(**options).check(event_type, data)
