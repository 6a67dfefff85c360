"""One retry for a language model's reply, the same for every provider (ReplyDeadlines says when)."""

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from streaming import counters
from streaming.providers.base import LanguageModelError, LlmEvent, ReplyDeadlines
from switchboard.observability import logger


class RetryableError(Exception):
    """One attempt at a reply failed in a way another attempt may not (a timeout, a cut stream, a 5xx)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # low-cardinality, for the retry counter


async def with_one_retry(
    attempt: Callable[[float], AsyncGenerator[LlmEvent]], *, deadlines: ReplyDeadlines, name: str, provider: str
) -> AsyncGenerator[LlmEvent]:
    """A reply from `attempt(started)`, tried once more on a RetryableError when ReplyDeadlines allow it:
    only while nothing has been handed on (nothing is said twice) and the retry still fits the budget.
    Any other failure, or a second one, is a LanguageModelError naming `name`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    retried = False
    while True:
        handed_on = False
        try:
            # aclosing: when the engine stops listening, the attempt (and its request) closes now.
            async with aclosing(attempt(started)) as events:
                async for event in events:
                    handed_on = True
                    yield event
            return
        except RetryableError as failure:
            if handed_on or retried or not deadlines.retry_fits(started, loop.time()):
                again = " after a retry" if retried else ""
                raise LanguageModelError(f"{name} failed{again}: {failure}") from failure
            retried = True
            logger.warning(
                "the language model failed; trying once more",
                extra={"provider": provider, "reason": failure.reason, "error": str(failure)},
            )
            counters.count("LlmRetries", provider=provider, reason=failure.reason)
