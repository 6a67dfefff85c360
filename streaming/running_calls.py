"""The calls this process is carrying, and how they leave it when the task shuts down.

Shutdown (SIGTERM from ECS on a deploy or scale-in) drains: the service stops taking calls (the health
check answers 503 so the load balancer sends no new ones, and new upgrades are refused), lets the running
calls go on for up to the drain time, and then hands the rest over. Handing over a call cancels its
engine, whose cancellation path saves the conversation and releases the call's lease, and closes the
socket with 1001 without marking the conversation ended; Twilio then requests the <Connect action>,
/twilio/stream-ended sees a live call and connects a new stream, which another task picks up from Redis.
"""

import asyncio
from dataclasses import dataclass, field

from switchboard.observability import logger

# Time for handed-over calls to save, release their lease and close once their engines are cancelled.
HANDOVER_TIMEOUT_S = 10.0


@dataclass(eq=False, slots=True)
class RunningCall:
    """One call's engine, running in its connection's task."""

    call_sid: str
    engine: "asyncio.Task[object]"
    handed_over: bool = field(default=False, init=False)

    def hand_over(self) -> None:
        """Stop carrying this call here: cancel its engine; the connection closes the socket with 1001."""
        self.handed_over = True
        self.engine.cancel()


class RunningCalls:
    def __init__(self) -> None:
        self._calls: set[RunningCall] = set()
        self._draining = False
        self._none_left = asyncio.Event()
        self._none_left.set()
        self._deadline_now = asyncio.Event()

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def draining(self) -> bool:
        return self._draining

    def add(self, call: RunningCall) -> None:
        if self._draining:
            raise RuntimeError("the service is draining: no new calls")
        self._calls.add(call)
        self._none_left.clear()

    def remove(self, call: RunningCall) -> None:
        self._calls.discard(call)
        if not self._calls:
            self._none_left.set()

    def hand_over_now(self) -> None:
        """End the drain's wait at once (a second signal): the running calls are handed over now."""
        self._deadline_now.set()

    async def drain(self, seconds: float, handover_timeout_s: float = HANDOVER_TIMEOUT_S) -> None:
        """Stop taking calls, let the running ones go on for up to `seconds`, then hand the rest over.

        Returns once no call is left, or handover_timeout_s after the handover if some engine would not
        stop (logged: its lease then expires on its own).
        """
        self._draining = True
        logger.info("draining: no new calls", extra={"running_calls": len(self._calls), "drain_seconds": seconds})
        finished = asyncio.ensure_future(self._none_left.wait())
        deadline_now = asyncio.ensure_future(self._deadline_now.wait())
        try:
            await asyncio.wait({finished, deadline_now}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
            deadline_now.cancel()
        if self._calls:
            logger.info("drain deadline: handing calls over", extra={"running_calls": len(self._calls)})
            for call in list(self._calls):
                call.hand_over()
            try:
                async with asyncio.timeout(handover_timeout_s):
                    await self._none_left.wait()
            except TimeoutError:
                logger.error(
                    "calls still running after the handover",
                    extra={"running_calls": len(self._calls), "call_sids": sorted(c.call_sid for c in self._calls)},
                )
        logger.info("drained")
