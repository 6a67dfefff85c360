"""The simulator's clock: milliseconds of call time, running `speed` times faster than the wall clock.

Everything the simulator measures (when the caller spoke, when audio played at the ear) is on this clock,
so a call on a fast clock reports the same call-time figures as in real time, as long as the server's
timing is also measured in audio time. Deadlines are computed from the start, never by adding up sleeps,
so the frame schedule does not drift.
"""

import asyncio
import time


class SimClock:
    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        self._start = time.monotonic()

    def restart(self) -> None:
        """Call time 0 is now (the call starts when its first stream does, not when it was set up)."""
        self._start = time.monotonic()

    def now_ms(self) -> float:
        return (time.monotonic() - self._start) * 1000.0 * self.speed

    def wall_delay_s(self, at_ms: float) -> float:
        """Wall-clock seconds until call time `at_ms` (negative when it has passed)."""
        return self._start + at_ms / 1000.0 / self.speed - time.monotonic()

    async def sleep_until(self, at_ms: float) -> None:
        delay = self.wall_delay_s(at_ms)
        await asyncio.sleep(delay if delay > 0 else 0)
