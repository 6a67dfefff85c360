"""Live call state against a real Redis: round trips, TTLs, leases and concurrent writers."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from switchboard.call import CallDirection
from switchboard.state import (
    RESUME_MARGIN_S,
    CallAlreadyExists,
    CallContext,
    CallStateStore,
    ChatMessage,
    ContextNotFound,
    Lease,
    LeaseKeeper,
    LeaseLost,
    LeaseUnavailable,
    VersionConflict,
    context_key,
    lease_key,
)

SID = "CA" + "0123456789abcdef" * 2
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
MAX_CALL_S = 900


@pytest.fixture
def store(redis_client: aioredis.Redis) -> CallStateStore:
    return CallStateStore(redis_client)


def _context(call_sid: str = SID) -> CallContext:
    return CallContext(
        call_sid=call_sid,
        agent_id="clinic-receptionist",
        direction=CallDirection.INBOUND,
        from_number="+14155550123",
        to_number="+15550100200",
        messages=[ChatMessage(role="system", content="You are the clinic's receptionist.")],
        started_at=T0,
    )


async def _lease(store: CallStateStore, owner: str = "task-a", ttl_ms: int = 5_000) -> Lease:
    lease = await store.acquire_lease(SID, owner, ttl_ms)
    assert lease is not None
    return lease


def _say(role: Literal["user", "assistant"], text: str) -> Callable[[CallContext], CallContext]:
    def mutate(ctx: CallContext) -> CallContext:
        message = ChatMessage(role=role, content=text)
        return ctx.model_copy(update={"messages": [*ctx.messages, message], "turn_count": ctx.turn_count + 1})

    return mutate


def test_ttl_covers_the_longest_call_plus_the_resume_margin() -> None:
    assert CallStateStore.ttl_for(900) == 900 + RESUME_MARGIN_S


def test_keys_share_a_cluster_slot() -> None:
    assert context_key(SID) == f"call:{{{SID}}}:context"
    assert lease_key(SID) == f"call:{{{SID}}}:lease"
    assert key_slot(context_key(SID).encode()) == key_slot(lease_key(SID).encode())
    with pytest.raises(ValueError, match="should match pattern"):
        context_key("CA}{x")


async def test_create_then_load_round_trips(store: CallStateStore) -> None:
    ctx = _context().model_copy(
        update={
            "facts": {"patient_name": "Ada"},
            "messages": [
                *_context().messages,
                ChatMessage(role="assistant", tool_calls=[{"id": "t1", "type": "function", "function": {}}]),
                ChatMessage(role="tool", content="booked", tool_call_id="t1", name="book_appointment"),
            ],
        }
    )

    created = await store.create(ctx, MAX_CALL_S)

    assert created.version == 1
    assert await store.load(SID) == created
    assert await store.load("CA" + "f" * 32) is None


async def test_create_twice_fails(store: CallStateStore) -> None:
    await store.create(_context(), MAX_CALL_S)

    with pytest.raises(CallAlreadyExists):
        await store.create(_context(), MAX_CALL_S)


async def test_create_refuses_a_non_positive_max_call(store: CallStateStore) -> None:
    with pytest.raises(ValueError, match="max_call_s"):
        await store.create(_context(), 0)


async def test_ttl_is_set_per_call_on_create_and_kept_by_save(
    store: CallStateStore, redis_client: aioredis.Redis
) -> None:
    ctx = await store.create(_context(), MAX_CALL_S)
    short_sid = "CA" + "f" * 32
    await store.create(_context(short_sid), 60)
    for sid, max_call_s in ((SID, MAX_CALL_S), (short_sid, 60)):
        ttl_s = CallStateStore.ttl_for(max_call_s)
        assert ttl_s - 5 < await redis_client.ttl(context_key(sid)) <= ttl_s

    await redis_client.pexpire(context_key(SID), 60_000)
    await store.save(ctx, await _lease(store))

    assert 50_000 < await redis_client.pttl(context_key(SID)) <= 60_000


async def test_save_bumps_the_version(store: CallStateStore) -> None:
    lease = await _lease(store)
    ctx = await store.create(_context(), MAX_CALL_S)

    saved = await store.save(ctx.model_copy(update={"greeted": True}), lease)

    assert saved.version == 2
    assert await store.load(SID) == saved


async def test_only_one_of_two_contenders_gets_the_lease(store: CallStateStore) -> None:
    leases = await asyncio.gather(store.acquire_lease(SID, "task-a", 5_000), store.acquire_lease(SID, "task-b", 5_000))

    assert sum(lease is not None for lease in leases) == 1


async def test_renewal_extends_the_lease(store: CallStateStore, redis_client: aioredis.Redis) -> None:
    lease = await _lease(store, ttl_ms=5_000)
    await redis_client.pexpire(lease_key(SID), 100)

    assert await store.renew(lease)
    assert await redis_client.pttl(lease_key(SID)) > 4_000


async def test_an_expired_lease_passes_to_the_next_contender(
    store: CallStateStore, redis_client: aioredis.Redis
) -> None:
    ctx = await store.create(_context(), MAX_CALL_S)
    first = await _lease(store, "task-a", ttl_ms=150)
    assert await store.acquire_lease(SID, "task-b", 150) is None

    await asyncio.sleep(0.2)
    second = await _lease(store, "task-b", ttl_ms=5_000)

    assert not await store.renew(first)
    with pytest.raises(LeaseLost, match="task-a"):
        await store.save(ctx, first)
    await store.release(first)
    assert await redis_client.get(lease_key(SID)) == second.token.encode()
    assert (await store.save(ctx, second)).version == 2


async def test_release_by_a_non_holder_does_nothing(store: CallStateStore, redis_client: aioredis.Redis) -> None:
    holder = await _lease(store)
    impostor = Lease(call_sid=SID, owner="task-b", token="not-the-token", ttl_ms=5_000)

    await store.release(impostor)
    assert await redis_client.get(lease_key(SID)) == holder.token.encode()

    await store.release(holder)
    assert await redis_client.get(lease_key(SID)) is None


async def test_save_without_the_lease_fails(store: CallStateStore) -> None:
    lease = await _lease(store)
    ctx = await store.create(_context(), MAX_CALL_S)
    await store.release(lease)

    with pytest.raises(LeaseLost):
        await store.save(ctx, lease)
    assert (await store.load(SID)) == ctx


async def test_save_of_an_expired_call_fails(store: CallStateStore) -> None:
    lease = await _lease(store)
    ctx = await store.create(_context(), MAX_CALL_S)
    await store.delete(SID)

    with pytest.raises(ContextNotFound):
        await store.save(ctx, lease)
    with pytest.raises(ContextNotFound):
        await store.update(SID, lease, _say("user", "hello?"))


async def test_of_two_writers_on_one_version_exactly_one_wins(store: CallStateStore) -> None:
    lease = await _lease(store)
    await store.create(_context(), MAX_CALL_S)
    first, second = await store.load(SID), await store.load(SID)
    assert first is not None
    assert second is not None

    results = await asyncio.gather(
        store.save(first.model_copy(update={"facts": {"writer": "first"}}), lease),
        store.save(second.model_copy(update={"facts": {"writer": "second"}}), lease),
        return_exceptions=True,
    )

    winners = [r for r in results if isinstance(r, CallContext)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(losers) == 1
    assert isinstance(losers[0], VersionConflict)
    assert "version 1, stored is 2" in str(losers[0])
    assert await store.load(SID) == winners[0]


async def test_concurrent_updates_all_land(store: CallStateStore) -> None:
    lease = await _lease(store)
    await store.create(_context(), MAX_CALL_S)

    def remember(n: int) -> Callable[[CallContext], CallContext]:
        say = _say("user", f"message {n}")
        return lambda ctx: say(ctx.model_copy(update={"facts": {**ctx.facts, f"fact-{n}": str(n)}}))

    # Each conflict means another writer got through, so 20 writers need at most 20 attempts each.
    await asyncio.gather(*(store.update(SID, lease, remember(n), attempts=20) for n in range(20)))

    final = await store.load(SID)
    assert final is not None
    assert final.version == 1 + 20
    assert final.facts == {f"fact-{n}": str(n) for n in range(20)}
    assert sorted(m.content or "" for m in final.messages[1:]) == sorted(f"message {n}" for n in range(20))
    assert final.turn_count == 20


async def test_a_new_task_resumes_where_the_last_one_stopped(store: CallStateStore) -> None:
    first = await _lease(store, "task-a")
    await store.create(_context(), MAX_CALL_S)
    await store.update(SID, first, _say("user", "I'd like an appointment."))
    await store.update(SID, first, _say("assistant", "Which day suits you?"))
    await store.release(first)

    second = await _lease(store, "task-b")
    resumed = await store.load(SID)
    assert resumed is not None
    assert [m.content for m in resumed.messages[1:]] == ["I'd like an appointment.", "Which day suits you?"]

    after = await store.update(SID, second, _say("user", "Tuesday."))
    assert after.version == 4
    assert after.turn_count == 3


async def test_keeper_renews_across_several_periods(store: CallStateStore, redis_client: aioredis.Redis) -> None:
    async with LeaseKeeper(store, SID, "task-a", ttl_ms=150) as keeper:
        await asyncio.sleep(0.5)
        assert not keeper.lost.is_set()
        assert await redis_client.get(lease_key(SID)) == keeper.lease.token.encode()

    assert await redis_client.get(lease_key(SID)) is None
    # Stopping the renewal on the way out is not losing the lease.
    assert not keeper.lost.is_set()


async def test_keeper_flags_a_lease_taken_from_under_it(store: CallStateStore, redis_client: aioredis.Redis) -> None:
    async with LeaseKeeper(store, SID, "task-a", ttl_ms=150) as keeper:
        await redis_client.delete(lease_key(SID))
        await asyncio.wait_for(keeper.lost.wait(), timeout=1)
        newcomer = await _lease(store, "task-b")

    # Leaving must not free the newcomer's lease.
    assert await redis_client.get(lease_key(SID)) == newcomer.token.encode()


async def test_keeper_gives_up_while_redis_is_unreachable(store: CallStateStore, redis_client: aioredis.Redis) -> None:
    # A write pause (`all=False`) holds back the keeper's renewal script, so its renewals time out, while this test's
    # reads still go through: the lease key is seen to still be ours when `lost` fires.
    async with LeaseKeeper(store, SID, "task-a", ttl_ms=300) as keeper:
        await redis_client.client_pause(2_000, all=False)
        try:
            await asyncio.wait_for(keeper.lost.wait(), timeout=1)
            assert await redis_client.pttl(lease_key(SID)) > 0
            assert await redis_client.get(lease_key(SID)) == keeper.lease.token.encode()
        finally:
            await redis_client.client_unpause()


async def test_keeper_flags_a_renewal_that_fails_unexpectedly(redis_client: aioredis.Redis) -> None:
    class BrokenRenewal(CallStateStore):
        async def renew(self, lease: Lease) -> bool:
            raise RuntimeError("a bug, not Redis")

    async with LeaseKeeper(BrokenRenewal(redis_client), SID, "task-a", ttl_ms=150) as keeper:
        await asyncio.wait_for(keeper.lost.wait(), timeout=1)

    assert await redis_client.get(lease_key(SID)) is None


async def test_keeper_refuses_a_held_lease(store: CallStateStore) -> None:
    await _lease(store, "task-a")

    with pytest.raises(LeaseUnavailable):
        async with LeaseKeeper(store, SID, "task-b", ttl_ms=150):
            pytest.fail("entered without the lease")


async def test_keeper_releases_when_the_body_fails(store: CallStateStore, redis_client: aioredis.Redis) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with LeaseKeeper(store, SID, "task-a", ttl_ms=5_000):
            raise RuntimeError("boom")

    assert await redis_client.get(lease_key(SID)) is None
