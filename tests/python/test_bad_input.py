# test_bad_input.py — bad input to every public function gets the right exception (and
# changes nothing).
import pytest

import engram


def test_open_and_connect_refuse_bad_arguments(tmp_path):
    with pytest.raises(engram.InvalidArgument):
        engram.open("")
    with pytest.raises(engram.InvalidArgument):
        engram.open("a\0b")
    with pytest.raises(TypeError):
        engram.open(42)
    with pytest.raises(engram.InvalidArgument):
        engram.open(str(tmp_path / "l"), durability="sometimes")
    with pytest.raises(engram.InvalidArgument):
        engram.open(str(tmp_path / "l"), dedup_window=-1)
    with pytest.raises(TypeError):
        engram.open(str(tmp_path / "l"), map_size="big")
    with pytest.raises(TypeError):
        engram.connect(None)
    with pytest.raises(engram.InvalidArgument):
        engram.connect("tcp://127.0.0.1:1", timeout=-5)
    # libzmq would wrap port 99999 to 34463: refused, never reached.
    with pytest.raises(engram.InvalidArgument, match="TCP port"):
        engram.connect("tcp://127.0.0.1:99999")


@pytest.mark.parametrize("args,kw,exc", [
    (("bad topic!", "x.y", b""), {}, engram.InvalidArgument),
    (("", "x.y", b""), {}, engram.InvalidArgument),
    (("t" * 201, "x.y", b""), {}, engram.InvalidArgument),
    (("t", "bad type", b""), {}, engram.InvalidArgument),
    (("t", ".x", b""), {}, engram.InvalidArgument),
    (("t", "x.y", 3.5), {}, TypeError),
    (("t", "x.y", {"a": object()}), {}, engram.InvalidArgument),
    ((None, "x.y", b""), {}, TypeError),
    (("t", None, b""), {}, TypeError),
    (("t", "x.y", b""), {"key": 5}, TypeError),
    (("t", "x.y", b""), {"key": "k" * 1025}, engram.TooBig),
    (("t", "x.y", b""), {"headers": ["a"]}, TypeError),
    (("t", "x.y", b""), {"headers": {"a": 1}}, TypeError),
    (("t", "x.y", b""), {"headers": {"": "v"}}, engram.InvalidArgument),
    (("t", "x.y", b""), {"headers": {f"h{i}": "v" for i in range(65)}}, engram.TooBig),
    (("t", "x.y", b""), {"idempotency_key": 7}, TypeError),
    (("t", "x.y", b""), {"delay": -1}, engram.InvalidArgument),
    (("t", "x.y", b""), {"delay": "soon"}, TypeError),
    (("t", "x.y", b""), {"delay": 1, "deliver_at": 5}, engram.InvalidArgument),
    (("t", "x.y", b""), {"deliver_at": -1}, engram.InvalidArgument),
    (("t", "x.y", b"x" * (2 << 20)), {}, engram.TooBig),
    (("t", "x.\0y", b""), {}, engram.InvalidArgument),
    # Names the message quotes cut: a character across the cut, controls, C1 controls.
    *[(("t" * n + "é" + "t", "x.y", b""), {}, engram.InvalidArgument) for n in range(36, 44)],
    *[(("t", "x" * n + "é", b""), {}, engram.InvalidArgument) for n in range(36, 70, 3)],
    (("new\nline\x1b[2J", "x.y", b""), {}, engram.InvalidArgument),
    (("c1\x9b", "x.y", b""), {}, engram.InvalidArgument),
])
def test_append_refuses_bad_input_and_writes_nothing(log, args, kw, exc):
    log.create_topic("t")
    with pytest.raises(exc) as refused:
        log.append(*args, **kw)
    assert log.topic("t").count == 0
    # The message quotes the bad name on one line, with nothing for a terminal.
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in str(refused.value))


def test_a_duration_too_long_to_carry_is_refused_by_name(log):
    log.create_topic("t")
    g = log.group("t", "g")
    with pytest.raises(engram.InvalidArgument, match="delay: 1e\\+20 seconds is too long"):
        log.append("t", "x.y", b"", delay=1e20)
    with pytest.raises(engram.InvalidArgument, match="wait: 1e\\+20 seconds is too long"):
        g.fetch("c", wait=1e20)
    assert log.topic("t").count == 0


def test_other_log_functions_refuse_bad_input(log):
    log.create_topic("t")
    with pytest.raises(TypeError):
        log.append_many("t", "not a list")
    with pytest.raises(TypeError):
        log.append_many("t", [42])
    with pytest.raises(engram.InvalidArgument):
        log.append_many("t", [{"type": "x.y", "bogus": 1}])
    with pytest.raises(engram.InvalidArgument):
        log.read("t", 1, -1)
    with pytest.raises(engram.InvalidArgument):
        log.read("t", -1, 10)
    with pytest.raises(TypeError):
        log.read("t", "1", 10)
    with pytest.raises(engram.NotFound):
        log.read("missing", 1, 10)
    with pytest.raises(engram.NotFound):
        log.get("t", 1)
    with pytest.raises(engram.InvalidArgument):
        log.create_topic("bad name")
    with pytest.raises(engram.InvalidArgument):
        log.create_topic("big", max_payload=(64 << 20) + 1)
    with pytest.raises(engram.NotFound):
        log.drop_topic("missing")
    with pytest.raises(engram.NotFound):
        log.topic("missing")
    with pytest.raises(engram.InvalidArgument):
        log.train_dict("t")  # too few events
    with pytest.raises(TypeError):
        log.backup(None)
    assert log.topic("t").count == 0
def test_group_functions_refuse_bad_input(log):
    log.create_topic("t")
    log.append("t", "x.y", b"")
    with pytest.raises(engram.InvalidArgument):
        log.group("t", "bad group!")
    with pytest.raises(engram.InvalidArgument):
        log.group("t", "g", filters=["bad pattern!"])
    with pytest.raises(TypeError):
        log.group("t", "g", filters=5)
    with pytest.raises(engram.InvalidArgument):
        log.group("t", "g", filters=[f"a{i}" for i in range(17)])
    with pytest.raises(engram.InvalidArgument):
        log.group("t", "g", start="middle")
    with pytest.raises(TypeError):
        log.group("t", "g", start=1.5)
    with pytest.raises(engram.InvalidArgument):
        log.group("t", "g", ack_wait=0)
    with pytest.raises(engram.InvalidArgument):
        log.group("t", "g", max_deliver=0)
    with pytest.raises(TypeError):
        log.group("t", "g", backoff="1s")
    with pytest.raises(engram.InvalidArgument):
        log.group("t", "g", backoff=[1] * 17)
    with pytest.raises(engram.NotFound):
        log.group("t", "nope", create=False)
    with pytest.raises(engram.NotFound):
        log.delete_group("t", "nope")
    g = log.group("t", "g")
    with pytest.raises(engram.InvalidArgument):
        g.consumer(batch=0)
    with pytest.raises(TypeError):
        g.consumer(name=5)
    with pytest.raises(engram.InvalidArgument):
        g.consumer(wait=-1)
    with pytest.raises(engram.InvalidArgument):
        g.fetch("bad consumer!", 1)
    with pytest.raises(engram.InvalidArgument):
        g.fetch("c", 0)
    with pytest.raises(engram.NotLeased):
        g.ack(1, 1)
    with pytest.raises(engram.NotFound):
        g.status(99)
    with pytest.raises(engram.InvalidArgument):
        g.reset()
    with pytest.raises(engram.InvalidArgument):
        g.reset(1, to="earliest")
    with pytest.raises(engram.InvalidArgument):
        g.reset(to="sideways")
    with pytest.raises(engram.InvalidArgument):
        g.nack(1, 1, delay=-2)
    with pytest.raises(TypeError):
        g.redrive(offsets=5)
    ev = g.fetch("c", 1)[0]
    with pytest.raises(engram.InvalidArgument):
        ev.nack(delay=31 * 86400)
    with pytest.raises(TypeError):
        ev.ack(result=object())
    ev.ack()
    with pytest.raises(engram.AlreadyDone):
        ev.ack()
    read = log.get("t", 1)
    with pytest.raises(engram.InvalidArgument):
        read.ack()  # read, not fetched


def test_event_json_on_a_non_json_payload(log):
    log.append("t", "x.y", b"\xff not json")
    with pytest.raises(engram.InvalidArgument):
        log.get("t", 1).json()


def test_calls_on_a_closed_log_raise_closed(log_path):
    lg = engram.open(log_path)
    lg.close()
    for call in (lambda: lg.append("t", "x.y", b""), lambda: lg.topics(), lambda: lg.read("t"),
                 lambda: lg.stats(), lambda: lg.group("t", "g"), lambda: lg.sync()):
        with pytest.raises(engram.Closed):
            call()


def test_every_code_has_its_class():
    for code in range(-1, -23, -1):
        cls = engram.errors.error_for_code(code)
        assert cls.code == code and issubclass(cls, engram.Error)
        assert cls.errname == engram.errname(code)
    assert engram.errors.error_for_code(-999) is engram.Error
