"""The media server's background writes (boto3: turn records and conversation ends in DynamoDB,
TurnCompleted events) on one thread of their own, off the event loop.

`asyncio.to_thread` would run them on the loop's default executor, which grows to min(32, CPUs + 4)
threads under load. At the end of a turn, hundreds of calls record a turn at once, and every runnable
thread then takes turns with the event loop for the GIL (up to 5 ms each, sys.getswitchinterval): that is
what delayed inbound audio frames by tens of ms at 200 calls per core (bench/capacity.py: frame lag p99
36 ms with four threads, 15 ms with one). These writes are in the background, each call's in order
already (conversation.TurnWriter), and boto3 spends most of a write waiting on the network with the GIL
released: one thread keeps up with a few hundred writes a second, and the loop shares the GIL with it alone.
Latency-critical blocking calls (reading the call record at the start of a stream) stay on to_thread, so
they never queue behind this backlog. The task's contextvars (the CallSid of the logs) go along.
"""

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

BACKGROUND_THREADS: Final = 1

_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=BACKGROUND_THREADS, thread_name_prefix="background-io")
    return _executor


async def run_blocking[**P, T](function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`asyncio.to_thread` for background writes, on the media server's own I/O thread."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return await loop.run_in_executor(_pool(), call)
