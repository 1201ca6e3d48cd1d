# memory_handlers.py — @on_event handlers found by TractApp.discover("tractpkg").
from engram.tracts import on_event

CALLS = []


@on_event("memory", "saved")
def on_saved(ctx):
    CALLS.append(("memory.saved", ctx.message["id"], ctx.tract, ctx.event))


@on_event("memory", "*")
def on_any_memory(ctx):
    CALLS.append(("memory.*", ctx.message["id"], ctx.tract, ctx.event))


@on_event("*", "deleted")
async def on_any_deleted(ctx):
    CALLS.append(("*.deleted", ctx.message["id"], ctx.tract, ctx.event))
