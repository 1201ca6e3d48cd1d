# workerapp.py — an App that the process tests run with `python -m engram worker`; what it
# does is set by environment variables, and it records each handled event in a file.
import os
import time

import engram

LOG = os.environ["ENGRAM_TEST_LOG"]
OUT = os.environ["ENGRAM_TEST_OUT"]
SLEEP_OFFSET = int(os.environ.get("ENGRAM_TEST_SLEEP_OFFSET", "0"))   # sleep on this offset ...
SLEEP_SECONDS = float(os.environ.get("ENGRAM_TEST_SLEEP_SECONDS", "0"))  # ... on attempt 1
STARTED = os.environ.get("ENGRAM_TEST_STARTED")  # file touched when the sleep begins
EACH = float(os.environ.get("ENGRAM_TEST_EACH", "0"))  # seconds per event

app = engram.App(LOG, group="workers", topic="jobs", ack_wait=0.5, backoff=[0.05], max_deliver=5)


def record(ev):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"{os.getpid()}.txt"), "a") as f:
        f.write(f"{os.getpid()} {ev.offset} {ev.attempt} {ev.type}\n")


@app.on("job.*")
def handle(ev):
    if ev.offset == SLEEP_OFFSET and ev.attempt == 1:
        if STARTED:
            open(STARTED, "w").close()
        time.sleep(SLEEP_SECONDS)
    if EACH:
        time.sleep(EACH)
    record(ev)
    return {"pid": os.getpid()}
