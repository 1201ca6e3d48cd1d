# test_conventions.py — what a Python user may rely on: re-declaring a group with other
# settings raises, creating a topic from group() is asked for, a transaction's appends
# create topics as log.append does, the package's public surface passes mypy --strict as a
# user sees it, and so does the package's own code (with the C extension's stub complete).
import os
import shutil
import subprocess
import sys

import pytest

import engram
from conftest import BINDING


def test_redeclaring_a_group_with_the_same_settings_returns_it(log):
    log.create_topic("memory")
    log.group("memory", "indexer", ack_wait=30, max_deliver=5, filters="memory.*")
    g = log.group("memory", "indexer", ack_wait=30, max_deliver=5, filters=["memory.*"])
    assert g.info().max_deliver == 5


def test_redeclaring_a_group_with_other_settings_raises_and_keeps_the_old(log):
    log.create_topic("memory")
    log.group("memory", "indexer", ack_wait=30, max_deliver=5)
    with pytest.raises(engram.AlreadyExists) as e:
        log.group("memory", "indexer", ack_wait=60, max_deliver=5)
    assert "ack_wait" in str(e.value) and "30" in str(e.value)
    info = log.group("memory", "indexer").info()   # no settings: no check
    assert info.ack_wait == 30


def test_group_on_a_missing_topic_raises_unless_asked_to_create_it(log):
    with pytest.raises(engram.NotFound):
        log.group("nowhere", "indexer")
    assert [t.name for t in log.topics()] == []
    log.group("nowhere", "indexer", create_topic=True)
    assert [t.name for t in log.topics()] == ["nowhere"]


def test_transaction_append_creates_a_missing_topic_like_log_append(log):
    log.append("memory", "memory.saved", {"id": 1})
    g = log.group("memory", "indexer")
    [ev] = g.fetch("w1", max=1)
    with log.transaction() as tx:
        tx.ack(ev)
        tx.append("memory-indexed", "memory.indexed", {"id": ev.key})
    assert log.topic("memory-indexed").count == 1


def test_transaction_append_to_a_missing_topic_raises_when_the_log_does_not_create_topics(log_path):
    with engram.open(log_path, create_topics=False) as lg:
        with pytest.raises(engram.NotFound):
            with lg.transaction() as tx:
                tx.append("absent", "x", b"1")


def test_all_names_are_exported():
    for name in engram.__all__:
        assert hasattr(engram, name), name
    assert "open" in engram.__all__ and "Log" in engram.__all__ and "NotFound" in engram.__all__


def _mypy():
    for py in (sys.executable, "/usr/bin/python3"):
        if subprocess.run([py, "-m", "mypy", "--version"], capture_output=True).returncode == 0:
            return py
    return None


@pytest.mark.skipif(_mypy() is None, reason="no mypy (apt-get install python3-mypy)")
def test_the_public_surface_passes_mypy_strict(tmp_path):
    user = tmp_path / "user.py"
    user.write_text(
        "import engram\n"
        "def main(path: str) -> int:\n"
        "    with engram.open(path) as log:\n"
        "        off: engram.Offset = log.append('memory', 'memory.saved', {'a': 1})\n"
        "        log.create_topic('x', exist_ok=True)\n"
        "        try:\n"
        "            log.topic('y')\n"
        "        except engram.NotFound:\n"
        "            pass\n"
        "        g: engram.Group = log.group('memory', 'g', ack_wait=30, create_topic=True)\n"
        "        for ev in g.fetch('w', max=1):\n"
        "            ev.ack()\n"
        "        with log.transaction() as tx:\n"
        "            tx.append('other', 'x', b'1')\n"
        "        s: engram.ScheduleInfo = log.add_schedule('s', 'memory', 'tick', {'a': 1}, every=60)\n"
        "        changed: str = log.set_schedule('s', 'memory', 'tick', cron='0 2 * * *', tz='UTC')\n"
        "        for x in log.schedules():\n"
        "            print(x.name, x.every, x.cron, x.next_slot, s.fires, changed)\n"
        "        log.pause_schedule('s')\n"
        "        log.resume_schedule('s')\n"
        "        fired: int = log.run_schedule('s') + log.tick_schedules()['fired']\n"
        "        log.remove_schedule('s')\n"
        "        return int(off) + fired\n"
        "def beat(path: str) -> None:\n"
        "    from datetime import timedelta\n"
        "    from engram.celery import Celery\n"
        "    from engram.celery.schedules import crontab, schedule\n"
        "    app = Celery('proj', broker=path)\n"
        "    app.conf.timezone = 'Europe/Paris'\n"
        "    app.conf.beat_schedule = {\n"
        "        'a': {'task': 'proj.a', 'schedule': crontab(minute=0, hour='*/3')},\n"
        "        'b': {'task': 'proj.b', 'schedule': timedelta(minutes=5), 'args': (1,)},\n"
        "        'c': {'task': 'proj.c', 'schedule': schedule(30.0), 'options': {'queue': 'q'}},\n"
        "    }\n"
        "    print(app.declare_schedules())\n")
    r = subprocess.run([_mypy(), "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", str(tmp_path / "cache"), str(user)],
                       capture_output=True, text=True, env=dict(os.environ, MYPYPATH=BINDING))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(_mypy() is None, reason="no mypy (apt-get install python3-mypy)")
def test_the_package_itself_passes_mypy_strict(tmp_path):
    r = subprocess.run([_mypy(), "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", str(tmp_path / "cache"), "engram"],
                       capture_output=True, text=True, cwd=BINDING)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_extension_stub_declares_every_name_the_extension_has():
    import ast
    from engram import _engram
    with open(os.path.join(BINDING, "engram", "_engram.pyi")) as f:
        tree = ast.parse(f.read())

    def declared(body):
        names = set()
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        return names
    top = declared(tree.body)
    classes = {n.name: declared(n.body) for n in tree.body if isinstance(n, ast.ClassDef)}

    def public(obj):
        return {n for n in dir(obj) if not n.startswith("__")}
    missing = public(_engram) - top
    for cls in ("Log", "Txn"):
        missing |= {f"{cls}.{n}" for n in public(getattr(_engram, cls)) - classes[cls]}
    assert not missing, f"add to bindings/python/engram/_engram.pyi: {sorted(missing)}"


def _engram_cli():
    return os.path.join(os.path.dirname(BINDING), "..", "build", "engram")


@pytest.mark.skipif(not os.access(os.path.join(os.path.dirname(os.path.dirname(BINDING)), "build", "engram"), os.X_OK),
                    reason="no build/engram")
def test_stats_has_the_shape_of_engram_stat_json(log, log_path):
    import json
    log.append("memory", "memory.saved", {"a": 1})
    log.group("memory", "indexer", filters="memory.*", backoff=[1, 2], key_ordered=True)
    g = log.group("memory", "all")
    g.fetch("w", max=1)
    mine = log.stats()
    cli = os.path.join(os.path.dirname(os.path.dirname(BINDING)), "build", "engram")
    out = subprocess.run([cli, "--data", log_path, "stat", "--json"], capture_output=True, text=True, check=True)
    theirs = json.loads(out.stdout)
    for d in (mine, theirs):          # the only values that move between the two calls
        for grp in d["groups"]:
            grp.pop("oldest_unfinished_age_ms")
    assert mine == theirs
