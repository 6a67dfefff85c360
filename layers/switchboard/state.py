"""Live call state on Redis: what a streaming task needs to carry on a call, and who may drive it.

A call's context (facts, the LLM's messages, counters) lives under one key, so a task that picks the
call up after a reconnect, or on another container, resumes where the last one stopped. Two rules keep
it consistent:

- A lease: only the task holding `call:{sid}:lease` drives the call. It expires by itself, so a
  crashed task frees the call within ttl_ms, and a holder that cannot renew knows it stopped owning it.
- Optimistic versioning: a save writes only over the version it loaded, and only while the lease is
  held, so two writers never silently drop each other's update.

Keys carry the CallSid as a Redis Cluster hash tag: ElastiCache Serverless runs in cluster mode, and the
save script touches the context and the lease together, which only works when both hash to one slot.
"""

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from switchboard.call import CallParties, valid_call_sid
from switchboard.observability import logger

# After the agent's hard limit, the state stays this long: a stream that drops near the end can still
# resume, and post-call work (status callback, summary) can still read it. Past that nobody needs it,
# and the TTL cleans up after tasks that died without deleting it.
RESUME_MARGIN_S = 15 * 60


class CallStateError(Exception):
    """Base of every error of the call state store."""


class CallAlreadyExists(CallStateError):
    """The call already has state: a second stream resumes it with load(), it does not create it again."""


class ContextNotFound(CallStateError):
    """No state for this call: never created, deleted, or expired."""


class VersionConflict(CallStateError):
    """Someone saved since this context was loaded; load again and reapply the change."""


class LeaseLost(CallStateError):
    """The lease expired or was taken over: this task no longer drives the call."""


class LeaseUnavailable(CallStateError):
    """Another task holds the call's lease."""


class ChatMessage(BaseModel):
    """One message of the LLM's context window, shaped as chat-completion APIs take it."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class CallContext(CallParties):
    """Everything a streaming task needs to carry on one live call."""

    facts: dict[str, str] = Field(default_factory=dict, description="What the call has established so far.")
    messages: list[ChatMessage] = Field(default_factory=list)
    greeted: bool = False
    turn_count: int = Field(default=0, ge=0)
    started_at: datetime
    version: int = Field(default=0, ge=0, description="Set by the store: 1 on create, +1 on every save.")


@dataclass(frozen=True, slots=True)
class Lease:
    call_sid: str
    owner: str
    token: str
    ttl_ms: int


def _key(call_sid: str, part: str) -> str:
    # Validated because the sid goes inside the hash tag: a stray "}" would move the key to another slot.
    return f"call:{{{valid_call_sid(call_sid)}}}:{part}"


def context_key(call_sid: str) -> str:
    return _key(call_sid, "context")


def lease_key(call_sid: str) -> str:
    return _key(call_sid, "lease")


# The context key is a hash: `ctx` holds the JSON, `version` the number the save script compares, so
# a save costs the same however long the conversation has grown (no JSON decoding inside Redis).
_CTX = "ctx"

# KEYS: context. ARGV: JSON at version 1, TTL in seconds. 1 if created, 0 if the call already had state.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'ctx', ARGV[1], 'version', 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# Replies of the save script: {outcome, number}. Integers, so they read the same whether or not the
# client decodes responses.
_SAVED, _MISSING, _NOT_HELD, _STALE = 0, 1, 2, 3

# KEYS: context, lease. ARGV: lease token, expected version, new JSON (carrying expected + 1).
# HSET keeps the key's TTL, so state never outlives the limit set at create.
_SAVE = """
local stored = redis.call('HGET', KEYS[1], 'version')
if not stored then return {1, 0} end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {2, 0} end
stored = tonumber(stored)
if stored ~= tonumber(ARGV[2]) then return {3, stored} end
redis.call('HSET', KEYS[1], 'ctx', ARGV[3], 'version', stored + 1)
return {0, stored + 1}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class CallStateStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._create = redis.register_script(_CREATE)
        self._save = redis.register_script(_SAVE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @staticmethod
    def ttl_for(max_call_s: int) -> int:
        """The state's TTL for an agent: its max call duration plus RESUME_MARGIN_S.

        Set once at create and kept by every save, so however a call ends, its state is gone at most
        RESUME_MARGIN_S after the call could last have run.
        """
        return max_call_s + RESUME_MARGIN_S

    async def create(self, ctx: CallContext, max_call_s: int) -> CallContext:
        """Store a new call's state, kept for ttl_for(max_call_s): the TTL is per call, as agents' limits differ."""
        if max_call_s <= 0:
            raise ValueError(f"max_call_s must be positive, got {max_call_s}")
        created = ctx.model_copy(update={"version": 1})
        ttl_s = self.ttl_for(max_call_s)
        if not await self._create(keys=[context_key(ctx.call_sid)], args=[created.model_dump_json(), ttl_s]):
            raise CallAlreadyExists(f"call {ctx.call_sid} already has state")
        return created

    async def load(self, call_sid: str) -> CallContext | None:
        raw = await self._redis.hget(context_key(call_sid), _CTX)
        return None if raw is None else CallContext.model_validate_json(raw)

    async def save(self, ctx: CallContext, lease: Lease) -> CallContext:
        """Write ctx over the version it was loaded at, while holding lease; returns it at its new version."""
        if lease.call_sid != ctx.call_sid:
            raise ValueError(f"lease of {lease.call_sid} cannot save call {ctx.call_sid}")
        saved = ctx.model_copy(update={"version": ctx.version + 1})
        outcome, number = await self._save(
            keys=[context_key(ctx.call_sid), lease_key(ctx.call_sid)],
            args=[lease.token, ctx.version, saved.model_dump_json()],
        )
        if outcome == _MISSING:
            raise ContextNotFound(f"call {ctx.call_sid} has no state (expired or deleted)")
        if outcome == _NOT_HELD:
            raise LeaseLost(f"{lease.owner} no longer holds the lease of call {ctx.call_sid}")
        if outcome == _STALE:
            raise VersionConflict(f"call {ctx.call_sid}: saving over version {ctx.version}, stored is {number}")
        # Checked explicitly, not asserted: an assert vanishes under `python -O`, and a reply we do not
        # understand must not pass for a save at the version we return.
        if (outcome, number) != (_SAVED, saved.version):
            raise CallStateError(f"call {ctx.call_sid}: unexpected reply {[outcome, number]} from the save script")
        return saved

    async def update(
        self, call_sid: str, lease: Lease, mutate: Callable[[CallContext], CallContext], attempts: int = 5
    ) -> CallContext:
        """Load, mutate, save; on a conflict, again from a fresh load, up to `attempts` times.

        `mutate` may run more than once, so it must only compute the new context from the one it gets.
        Each conflict means another writer succeeded, so n concurrent writers all get through in n attempts.
        """
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        for _ in range(attempts - 1):
            try:
                return await self._update_once(call_sid, lease, mutate)
            except VersionConflict:
                continue
        return await self._update_once(call_sid, lease, mutate)

    async def _update_once(
        self, call_sid: str, lease: Lease, mutate: Callable[[CallContext], CallContext]
    ) -> CallContext:
        current = await self.load(call_sid)
        if current is None:
            raise ContextNotFound(f"call {call_sid} has no state (expired or deleted)")
        return await self.save(mutate(current), lease)

    async def delete(self, call_sid: str) -> None:
        await self._redis.delete(context_key(call_sid))

    async def acquire_lease(self, call_sid: str, owner: str, ttl_ms: int) -> Lease | None:
        """The call's lease for `owner`, or None while someone else holds it."""
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        lease = Lease(call_sid=call_sid, owner=owner, token=secrets.token_hex(16), ttl_ms=ttl_ms)
        acquired = await self._redis.set(lease_key(call_sid), lease.token, nx=True, px=ttl_ms)
        return lease if acquired else None

    async def renew(self, lease: Lease) -> bool:
        """Push the lease's expiry ttl_ms out again; False if it is no longer this lease."""
        return bool(await self._renew(keys=[lease_key(lease.call_sid)], args=[lease.token, lease.ttl_ms]))

    async def release(self, lease: Lease) -> None:
        """Free the lease now, unless it already passed to someone else."""
        await self._release(keys=[lease_key(lease.call_sid)], args=[lease.token])


class LeaseKeeper:
    """Holds a call's lease for the body of an `async with`, renewing it every ttl/4.

    `lost` is set when the lease can no longer be counted on: a renewal was refused, Redis stayed
    unreachable long enough that the lease may expire before the next attempt, or renewal failed in any
    other way. The driving task should stop at once then, since another task may take the call over.
    """

    def __init__(self, store: CallStateStore, call_sid: str, owner: str, ttl_ms: int) -> None:
        self._store = store
        self._call_sid = call_sid
        self._owner = owner
        self._ttl_ms = ttl_ms
        self._lease: Lease | None = None
        self._renewal: asyncio.Task[None] | None = None
        self.lost = asyncio.Event()

    @property
    def lease(self) -> Lease:
        if self._lease is None:
            raise RuntimeError("the lease is only held inside `async with`")
        return self._lease

    async def __aenter__(self) -> Self:
        lease = await self._store.acquire_lease(self._call_sid, self._owner, self._ttl_ms)
        if lease is None:
            raise LeaseUnavailable(f"another task holds the lease of call {self._call_sid}")
        self._lease = lease
        self._renewal = asyncio.create_task(self._keep_renewing(lease), name=f"lease-renewal:{self._call_sid}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._lease is not None
        assert self._renewal is not None
        self._renewal.cancel()
        try:
            # wait() rather than awaiting the task: its CancelledError must not pass for our caller's.
            await asyncio.wait([self._renewal])
        finally:
            try:
                await self._store.release(self._lease)
            except RedisError:
                # Not worth failing the call's teardown over: the lease expires within ttl_ms anyway.
                logger.warning("could not release the call lease", extra={"owner": self._owner}, exc_info=True)
            self._lease = None

    async def _keep_renewing(self, lease: Lease) -> None:
        try:
            await self._renew_while_held(lease)
        except asyncio.CancelledError:
            # Only __aexit__ cancels this task: leaving `async with` is not a loss.
            raise
        except Exception:
            # A bug rather than an unreachable Redis. Caught here since nobody awaits this task's result:
            # __aexit__'s wait() would swallow it, and the driving task would never hear of it.
            logger.exception("the call lease renewal failed", extra={"owner": lease.owner})
        # However renewal stopped, nothing keeps the lease alive now: the driving task must stop.
        self.lost.set()

    async def _renew_while_held(self, lease: Lease) -> None:
        """Renew every ttl/4; return once the lease was refused or may expire before the next attempt ends."""
        ttl_s = lease.ttl_ms / 1000
        # A quarter leaves room for one failed renewal (fast or timed out) and one more try, all before
        # the lease expires.
        interval = ttl_s / 4
        held_until = time.monotonic() + ttl_s
        while True:
            await asyncio.sleep(interval)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(interval):
                    if not await self._store.renew(lease):
                        return
            except (RedisError, TimeoutError):
                logger.warning("could not renew the call lease", extra={"owner": lease.owner}, exc_info=True)
                # Give up while the lease is still ours, rather than after someone else may have it: the
                # next attempt starts within one interval and ends within another.
                if time.monotonic() + 2 * interval >= held_until:
                    return
                continue
            held_until = sent + ttl_s
