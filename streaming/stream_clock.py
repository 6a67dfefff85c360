"""Sleeping on the audio stream's clock rather than the wall clock.

Turn-taking, fillers and playout waits are timed in audio-stream milliseconds (Twilio's media timestamps):
that is the caller's time and Twilio's playout time, and it makes the engine behave the same when a
simulator runs the call faster than real time. Sleepers are futures in a heap, resolved by the receive
loop as frames arrive; `advance` costs one compare per frame when nothing is due.
"""

import asyncio
import heapq
import itertools


class StreamClock:
    def __init__(self) -> None:
        self.now_ms = 0
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def sleep_until(self, at_ms: int) -> asyncio.Future[None]:
        """A future done once the stream reaches `at_ms` (at once if it has). Cancel it to stop waiting."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if at_ms <= self.now_ms:
            future.set_result(None)
        else:
            heapq.heappush(self._heap, (at_ms, next(self._order), future))
        return future

    @property
    def next_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def advance(self, now_ms: int) -> None:
        self.now_ms = now_ms
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            future = heapq.heappop(heap)[2]
            if not future.done():
                future.set_result(None)
