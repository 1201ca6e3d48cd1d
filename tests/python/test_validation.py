# test_validation.py — memory-event input checks: URL schemes, SSRF address refusal (with
# a stub resolver, so no network is used), modalities, user ids and sizes.
import socket

import pytest

from engram import InvalidArgument, MemoryValidator, ValidationError
from engram.validation import (check_address, validate_memory_event, validate_modality,
                               validate_size, validate_url, validate_user_id)


def resolver_to(*addrs):
    def res(host, port, type=0):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addrs]
    return res


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://10.0.0.5/x", "http://192.168.1.1", "http://172.16.3.4:8080/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://localhost/", "http://app.localhost/",
    "http://2130706433/", "http://0x7f.0.0.1/", "http://100.64.0.1/", "http://224.0.0.1/",
    "http://[fc00::1]/",
])
def test_urls_to_internal_addresses_are_refused(url):
    with pytest.raises(ValidationError):
        validate_url(url, resolve=False)


@pytest.mark.parametrize("url", ["ftp://example.com/f", "file:///etc/passwd", "gopher://x/",
                                 "javascript:alert(1)", "data:text/plain,hi", "//no-scheme.com"])
def test_schemes_outside_the_allow_list_are_refused(url):
    with pytest.raises(ValidationError, match="scheme"):
        validate_url(url, resolve=False)


def test_a_public_url_passes():
    assert validate_url("https://93.184.216.34/a?b=c", resolve=False)
    assert validate_url("https://example.com/x", resolver=resolver_to("93.184.216.34"))


def test_a_hostname_resolving_to_a_private_address_is_refused():
    with pytest.raises(ValidationError, match="private"):
        validate_url("https://internal.example.com/", resolver=resolver_to("93.184.216.34", "10.1.2.3"))
    with pytest.raises(ValidationError, match="loopback"):
        validate_url("https://rebind.example.com/", resolver=resolver_to("127.0.0.1"))


def test_a_host_that_does_not_resolve_is_accepted_unless_asked_to_refuse_it():
    # Without DNS every name fails like a missing one (EAI_NONAME): refusing them all
    # would refuse every public URL; the fetch re-checks the address it connects to.
    def fail(host, port, type=0):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert validate_url("https://example.com/doc.pdf", resolver=fail)
    with pytest.raises(ValidationError, match="does not resolve"):
        validate_url("https://nope.invalid/", resolver=fail, unresolved="refuse")


@pytest.mark.parametrize("url", ["https://127.0.0.1/x", "http://example.com/../../etc/passwd",
                                 "http://example.com/a/%2e%2e/b", "http://example.com..evil.com/t",
                                 "http://metadata/computeMetadata/v1/", "http://db.internal/",
                                 "http://printer.local/"])
def test_traversal_and_internal_names_are_refused(url):
    with pytest.raises(ValidationError):
        validate_url(url, resolve=False)


def test_memu_shaped_events_pass_the_memory_validator():
    v = MemoryValidator(resolve=False)
    ok = {"resource_url": "https://example.com/doc.pdf", "modality": "conversation", "user": {"user_id": "u1"}}
    assert v("on_memory_saved", ok) is ok
    for bad in [dict(ok, resource_url="https://127.0.0.1/x"), dict(ok, resource_url="http://10.0.0.1/a"),
                dict(ok, user={"name": "no id"}), dict(ok, modality="smell")]:
        with pytest.raises(ValidationError):
            v("on_memory_saved", bad)


def test_url_shape_errors():
    for bad in ["", "http://", "http://exa mple.com/", "http://example.com:99999/", "x" * 3000, 42]:
        with pytest.raises(ValidationError):
            validate_url(bad, resolve=False)
    assert validate_url("ftp://93.184.216.34/", schemes=["ftp"], resolve=False)


def test_check_address():
    assert str(check_address("8.8.8.8")) == "8.8.8.8"
    for bad in ["127.0.0.2", "::1", "not an ip", "2002:7f00:1::"]:
        with pytest.raises(ValidationError):
            check_address(bad)


def test_modality_user_id_and_size():
    assert validate_modality("image") == "image"
    with pytest.raises(ValidationError):
        validate_modality("hologram")
    assert validate_modality("3d", allowed=["3d"]) == "3d"
    assert validate_user_id("conv-42:Nate") == "conv-42:Nate"
    for bad in ["", "a" * 129, "has space", "-leading", "semi;colon", None, 5]:
        with pytest.raises(ValidationError):
            validate_user_id(bad)
    assert validate_size({"a": 1}, 100) == 7
    assert validate_size("héllo", 6) == 6
    with pytest.raises(ValidationError, match="over the limit"):
        validate_size(b"x" * 11, 10)


def test_memory_validator_checks_each_field_and_is_a_value_error():
    v = MemoryValidator(resolve=False, max_text_bytes=10)
    good = {"user_id": "u1", "text": "short", "modality": "text", "url": "https://93.184.216.34/"}
    assert v("memory.saved", good) is good
    cases = [
        ("memory.saved", {"text": "no user"}),
        ("memory.saved", {"user_id": "u1", "text": "x" * 11}),
        ("memory.saved", {"user_id": "u1", "text": 5}),
        ("memory.saved", {"user_id": "u1", "modality": "smell"}),
        ("memory.saved", {"user_id": "u1", "image_url": "http://10.0.0.1/i.png"}),
        ("memory.exploded", {"user_id": "u1"}),
        ("memory.saved", ["not", "a", "dict"]),
        (None, {"user_id": "u1"}),
    ]
    for t, d in cases:
        with pytest.raises(ValidationError) as e:
            v(t, d)
        assert isinstance(e.value, InvalidArgument) and isinstance(e.value, ValueError)
    with pytest.raises(ValidationError, match="over the limit"):
        validate_memory_event("memory.saved", {"user_id": "u", "blob": "x" * 300}, max_event_bytes=200)
