"""The call records against moto's DynamoDB, with the table built from the same definition CDK uses."""

import base64
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.models.table import Table

from switchboard.call import Call, CallDirection, CallStatus, StatusEvent
from switchboard.records import (
    BY_AGENT_INDEX,
    BY_AGENT_PK,
    BY_AGENT_SK,
    BY_PHONE_INDEX,
    BY_PHONE_PK,
    BY_PHONE_SK,
    TABLE_PK,
    TABLE_SK,
    TTL_ATTRIBUTE,
    CallNotFound,
    CallRecords,
    ConflictingRecord,
    RecordsError,
    table_definition,
)
from switchboard.tool import ToolInvocation, ToolName, ToolOutcome
from switchboard.turn import Role, Turn

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

TABLE = "switchboard-records-test"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OUR_NUMBER = "+15550009999"
CUSTOMER = "+15550100001"


@pytest.fixture
def dynamodb(aws_env: None) -> Iterator["DynamoDBClient"]:
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(**table_definition(TABLE))
        yield client


@pytest.fixture
def records(dynamodb: "DynamoDBClient") -> CallRecords:
    return CallRecords(TABLE, dynamodb)


def new_sid() -> str:
    return "CA" + uuid.uuid4().hex


def make_call(
    sid: str | None = None,
    *,
    agent_id: str = "front-desk",
    created_at: datetime = T0,
    direction: CallDirection = CallDirection.INBOUND,
    customer: str = CUSTOMER,
    history: list[StatusEvent] | None = None,
) -> Call:
    inbound = direction is CallDirection.INBOUND
    return Call(
        call_sid=sid or new_sid(),
        direction=direction,
        from_number=customer if inbound else OUR_NUMBER,
        to_number=OUR_NUMBER if inbound else customer,
        agent_id=agent_id,
        created_at=created_at,
        status_history=history or [],
    )


def make_turn(sid: str, index: int, text: str | None = None) -> Turn:
    start = T0 + timedelta(seconds=10 * index)
    return Turn(
        call_sid=sid,
        index=index,
        role=Role.USER if index % 2 == 0 else Role.ASSISTANT,
        text=text if text is not None else f"turn {index}",
        started_at=start,
        ended_at=start + timedelta(seconds=4),
    )


def make_tool(sid: str, invocation_id: str, requested_at: datetime, **arguments: Any) -> ToolInvocation:
    return ToolInvocation(
        call_sid=sid,
        invocation_id=invocation_id,
        tool=ToolName.BOOK_APPOINTMENT,
        arguments=arguments or {"slot": "2026-03-03T10:00:00Z"},
        outcome=ToolOutcome.SUCCEEDED,
        result={"confirmation": "B-1"},
        requested_at=requested_at,
        completed_at=requested_at + timedelta(seconds=1),
    )


INITIATED = StatusEvent(status=CallStatus.INITIATED, sequence_number=0, at=T0)
RINGING = StatusEvent(status=CallStatus.RINGING, sequence_number=1, at=T0 + timedelta(seconds=2))
IN_PROGRESS = StatusEvent(status=CallStatus.IN_PROGRESS, sequence_number=2, at=T0 + timedelta(seconds=7))
COMPLETED = StatusEvent(
    status=CallStatus.COMPLETED,
    sequence_number=3,
    at=T0 + timedelta(seconds=49),
    duration_s=42,
    answered_by="human",
)


def raw_items(client: "DynamoDBClient", sid: str) -> list[dict[str, Any]]:
    response = client.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"CALL#{sid}"}},
    )
    return list(response["Items"])


def count_queries(records: CallRecords) -> Callable[[], int]:
    calls: list[str] = []

    def record(**_: Any) -> None:
        calls.append("query")

    records.client.meta.events.register("before-call.dynamodb.Query", record)
    return lambda: len(calls)


# -- schema -------------------------------------------------------------------------------------------


def test_table_has_the_keys_and_indexes_of_the_schema_constants(dynamodb: "DynamoDBClient") -> None:
    table = dynamodb.describe_table(TableName=TABLE)["Table"]
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {
        (TABLE_PK, "HASH"),
        (TABLE_SK, "RANGE"),
    }
    indexes = {index["IndexName"]: index for index in table.get("GlobalSecondaryIndexes", [])}
    assert set(indexes) == {BY_AGENT_INDEX, BY_PHONE_INDEX}
    assert [k["AttributeName"] for k in indexes[BY_AGENT_INDEX]["KeySchema"]] == [BY_AGENT_PK, BY_AGENT_SK]
    assert [k["AttributeName"] for k in indexes[BY_PHONE_INDEX]["KeySchema"]] == [BY_PHONE_PK, BY_PHONE_SK]
    assert all(index["Projection"]["ProjectionType"] == "ALL" for index in indexes.values())
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_item_layout(records: CallRecords, dynamodb: "DynamoDBClient") -> None:
    call = make_call()
    records.create_call(call)
    records.put_turn(make_turn(call.call_sid, 3))
    records.put_tool_invocation(make_tool(call.call_sid, "tool-1", T0))
    records.apply_status(call.call_sid, RINGING)
    items = {item["sk"]["S"]: item for item in raw_items(dynamodb, call.call_sid)}
    assert set(items) == {"CALL", "TURN#000003", "TOOL#tool-1", "STATUS#000001"}
    call_item = items["CALL"]
    assert call_item["item_type"] == {"S": "call"}
    assert call_item["at"] == {"S": "2026-03-02T09:00:00.000000Z"}
    assert call_item[BY_AGENT_PK] == {"S": "AGENT#front-desk"}
    assert call_item[BY_AGENT_SK] == {"S": f"2026-03-02T09:00:00.000000Z#{call.call_sid}"}
    assert call_item[BY_PHONE_PK] == {"S": f"PHONE#{CUSTOMER}"}
    assert call_item[BY_PHONE_SK] == call_item[BY_AGENT_SK]
    assert call_item["status"] == {"S": "ringing"}
    assert "status_history" not in call_item
    for sk in ("TURN#000003", "TOOL#tool-1", "STATUS#000001"):
        assert not {BY_AGENT_PK, BY_AGENT_SK, BY_PHONE_PK, BY_PHONE_SK, TTL_ATTRIBUTE} & set(items[sk])
    assert items["TURN#000003"]["item_type"] == {"S": "turn"}
    assert items["TOOL#tool-1"]["item_type"] == {"S": "tool"}
    assert items["STATUS#000001"]["at"] == {"S": "2026-03-02T09:00:02.000000Z"}


# -- calls ----------------------------------------------------------------------------------------------


def test_create_then_get(records: CallRecords) -> None:
    call = make_call(direction=CallDirection.OUTBOUND)
    assert records.create_call(call) is True
    assert records.get_call(call.call_sid) == call


def test_get_unknown_call_is_none(records: CallRecords) -> None:
    assert records.get_call(new_sid()) is None
    assert records.timeline(new_sid()) is None


def test_malformed_call_sid_is_refused(records: CallRecords) -> None:
    with pytest.raises(ValueError, match="String should match pattern"):
        records.get_call("CA#nope")


def test_create_replay_changes_nothing(records: CallRecords, dynamodb: "DynamoDBClient") -> None:
    call = make_call()
    assert records.create_call(call) is True
    before = raw_items(dynamodb, call.call_sid)
    assert records.create_call(call) is False
    assert records.create_call(Call.model_validate(call.model_dump(mode="json"))) is False
    assert raw_items(dynamodb, call.call_sid) == before

    # The replay still says `queued`; the status apply_status has moved on since does not make it a conflict.
    records.apply_status(call.call_sid, RINGING)
    advanced = raw_items(dynamodb, call.call_sid)
    assert records.create_call(call) is False
    assert raw_items(dynamodb, call.call_sid) == advanced
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert stored.status is CallStatus.RINGING


@pytest.mark.parametrize(
    "change",
    [
        {"agent_id": "someone-else"},
        {"direction": CallDirection.OUTBOUND},
        {"from_number": "+15550100002"},
        {"to_number": "+15550100002"},
        {"created_at": T0 + timedelta(seconds=1)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_different_call_at_the_same_sid_is_refused(
    records: CallRecords, dynamodb: "DynamoDBClient", change: dict[str, Any]
) -> None:
    call = make_call()
    records.create_call(call)
    records.apply_status(call.call_sid, RINGING)
    before = raw_items(dynamodb, call.call_sid)
    with pytest.raises(ConflictingRecord, match=f"CALL#{call.call_sid} / CALL"):
        records.create_call(call.model_copy(update=change))
    assert raw_items(dynamodb, call.call_sid) == before


def test_create_with_status_history_is_refused(records: CallRecords) -> None:
    call = make_call(history=[INITIATED, RINGING])
    with pytest.raises(ValueError, match="apply them with apply_status"):
        records.create_call(call)
    assert records.get_call(call.call_sid) is None


def test_naive_created_at_is_refused(records: CallRecords) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        records.create_call(make_call(created_at=datetime(2026, 3, 2, 9, 0)))


def test_builds_its_own_client_when_given_none(dynamodb: "DynamoDBClient") -> None:
    store = CallRecords(TABLE)
    call = make_call()
    assert store.create_call(call) is True
    assert CallRecords(TABLE, dynamodb).get_call(call.call_sid) == call


# -- turns and tools ------------------------------------------------------------------------------------


def test_timeline_reads_everything_back_in_order(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    turns = [make_turn(call.call_sid, index) for index in range(12)]
    for turn in [*turns[6:], *reversed(turns[:6])]:
        assert records.put_turn(turn) is True
    tools = [
        make_tool(call.call_sid, "zz-first", T0 + timedelta(seconds=5)),
        make_tool(call.call_sid, "aa-second", T0 + timedelta(seconds=30)),
        make_tool(call.call_sid, "mm-third", T0 + timedelta(seconds=31)),
    ]
    for tool in reversed(tools):
        assert records.put_tool_invocation(tool) is True
    for event in (COMPLETED, INITIATED, IN_PROGRESS, RINGING):
        assert records.apply_status(call.call_sid, event) is True

    queries = count_queries(records)
    timeline = records.timeline(call.call_sid, page_size=3)

    assert timeline is not None
    # 1 call + 12 turns + 3 tools + 4 status items, 3 to a page.
    assert queries() >= 7
    assert timeline.turns == turns
    assert timeline.tools == tools
    assert timeline.call.status_history == [INITIATED, RINGING, IN_PROGRESS, COMPLETED]
    assert timeline.call.status is CallStatus.COMPLETED
    assert records.timeline(call.call_sid) == timeline


def test_timeline_follows_dynamodbs_1mb_pages(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    turns = [make_turn(call.call_sid, index, text=f"{index}" * 300_000) for index in range(5)]
    for turn in turns:
        records.put_turn(turn)
    queries = count_queries(records)
    timeline = records.timeline(call.call_sid)
    assert timeline is not None
    assert queries() >= 2
    assert timeline.turns == turns


def test_tool_arguments_round_trip(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    tool = make_tool(
        call.call_sid,
        "call_abc123",
        T0,
        customer={"name": "Ada", "phone": CUSTOMER, "tags": ["vip", None, 3], "address": {"zip": "02139"}},
        price=12.5,
        ratio=0.1,
        tiny=1e-9,
        count=7,
        big=2**62 + 1,
        flag=False,
        empty={},
        missing=None,
    )
    records.put_tool_invocation(tool)
    timeline = records.timeline(call.call_sid)
    assert timeline is not None
    [stored] = timeline.tools
    assert stored == tool
    assert stored.arguments["big"] == 2**62 + 1
    assert isinstance(stored.arguments["big"], int)
    assert stored.arguments["ratio"] == 0.1


def test_number_out_of_dynamodbs_range_is_refused(records: CallRecords) -> None:
    with pytest.raises(ValueError, match="outside what DynamoDB can store"):
        records.put_tool_invocation(make_tool(new_sid(), "t", T0, distance=1e300))


def test_replayed_turn_is_a_no_op(records: CallRecords, dynamodb: "DynamoDBClient") -> None:
    call = make_call()
    records.create_call(call)
    turn = make_turn(call.call_sid, 3)
    assert records.put_turn(turn) is True
    before = raw_items(dynamodb, call.call_sid)
    assert records.put_turn(turn) is False
    assert records.put_turn(Turn.model_validate(turn.model_dump(mode="json"))) is False
    assert raw_items(dynamodb, call.call_sid) == before


def test_conflicting_turn_is_refused(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    turn = make_turn(call.call_sid, 3)
    records.put_turn(turn)
    with pytest.raises(ConflictingRecord, match="TURN#000003") as caught:
        records.put_turn(make_turn(call.call_sid, 3, text="something else entirely"))
    assert isinstance(caught.value, RecordsError)
    timeline = records.timeline(call.call_sid)
    assert timeline is not None
    assert timeline.turns == [turn]


def test_replayed_and_conflicting_tool_invocation(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    tool = make_tool(call.call_sid, "call_1", T0, slot="10:00")
    assert records.put_tool_invocation(tool) is True
    assert records.put_tool_invocation(tool) is False
    with pytest.raises(ConflictingRecord, match="TOOL#call_1"):
        records.put_tool_invocation(make_tool(call.call_sid, "call_1", T0, slot="11:00"))
    timeline = records.timeline(call.call_sid)
    assert timeline is not None
    assert timeline.tools == [tool]


def test_turns_and_tools_of_an_unrecorded_call_are_not_read_back(records: CallRecords) -> None:
    # By design the writes do not check for the call (a read would double their cost).
    sid = new_sid()
    assert records.put_turn(make_turn(sid, 0)) is True
    assert records.put_tool_invocation(make_tool(sid, "t1", T0)) is True
    assert records.timeline(sid) is None


def test_turn_index_beyond_the_key_width_is_refused(records: CallRecords) -> None:
    with pytest.raises(ValueError, match="turn index"):
        records.put_turn(make_turn(new_sid(), 1_000_000))


def test_concurrent_replays_of_a_turn_record_it_once(records: CallRecords, monkeypatch: pytest.MonkeyPatch) -> None:
    # DynamoDB checks a condition and writes atomically; moto checks then writes in plain Python, so
    # under threads it could let two conditional puts through. One lock restores DynamoDB's guarantee.
    lock = threading.Lock()
    original_put = Table.put_item

    def atomic_put(self: Table, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original_put(self, *args, **kwargs)

    monkeypatch.setattr(Table, "put_item", atomic_put)
    call = make_call()
    records.create_call(call)
    turn = make_turn(call.call_sid, 0)
    barrier = threading.Barrier(8)

    def put() -> bool:
        barrier.wait()
        return records.put_turn(turn)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: put(), range(8)))
    assert sorted(results) == [False] * 7 + [True]
    timeline = records.timeline(call.call_sid)
    assert timeline is not None
    assert timeline.turns == [turn]


# -- status ---------------------------------------------------------------------------------------------

_ANSWERED_CALL = [INITIATED, RINGING, IN_PROGRESS, COMPLETED]


def _with_duplicate(order: tuple[StatusEvent, ...], n: int) -> list[StatusEvent]:
    """The events in this order, one of them delivered twice; n varies which one and where."""
    deliveries = list(order)
    deliveries.insert((n * 3) % 5, order[n % 4])
    return deliveries


def test_status_callbacks_in_any_order_with_a_duplicate(records: CallRecords) -> None:
    for n, order in enumerate(itertools.permutations(_ANSWERED_CALL)):
        deliveries = _with_duplicate(order, n)
        seen = [event.sequence_number for event in deliveries]
        call = make_call()
        records.create_call(call)
        results = [records.apply_status(call.call_sid, event) for event in deliveries]
        # Every first delivery records its status item; only the duplicate adds nothing.
        assert results.count(True) == 4, seen
        stored = records.get_call(call.call_sid)
        assert stored is not None
        assert stored.status is CallStatus.COMPLETED, seen
        assert stored.answered_at == IN_PROGRESS.at, seen
        assert stored.ended_at == COMPLETED.at, seen
        assert stored.duration_s == 42, seen
        assert stored.answered_by == "human", seen
        assert stored.status_history == _ANSWERED_CALL, seen


def test_late_ringing_does_not_reopen_a_completed_call(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    for event in (INITIATED, IN_PROGRESS, COMPLETED):
        records.apply_status(call.call_sid, event)
    assert records.apply_status(call.call_sid, RINGING) is True  # a new status item, nothing else
    assert records.apply_status(call.call_sid, RINGING) is False
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert stored.status is CallStatus.COMPLETED
    assert stored.answered_at == IN_PROGRESS.at


@pytest.mark.parametrize("final", [CallStatus.BUSY, CallStatus.NO_ANSWER])
def test_unanswered_finals(records: CallRecords, final: CallStatus) -> None:
    call = make_call(direction=CallDirection.OUTBOUND)
    records.create_call(call)
    end = StatusEvent(status=final, sequence_number=2, at=T0 + timedelta(seconds=30), duration_s=0)
    for event in (end, INITIATED, RINGING, end):
        records.apply_status(call.call_sid, event)
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert stored.status is final
    assert stored.answered_at is None
    assert stored.ended_at == end.at
    assert stored.duration_s == 0
    assert stored.answered_by is None
    assert stored.status_history == [INITIATED, RINGING, end]


def test_conflicting_status_event_is_refused(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    records.apply_status(call.call_sid, RINGING)
    other = StatusEvent(status=CallStatus.IN_PROGRESS, sequence_number=RINGING.sequence_number, at=RINGING.at)
    with pytest.raises(ConflictingRecord, match="STATUS#000001"):
        records.apply_status(call.call_sid, other)
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert stored.status is CallStatus.RINGING
    assert stored.answered_at is None


def test_status_for_an_unknown_call(records: CallRecords, dynamodb: "DynamoDBClient") -> None:
    sid = new_sid()
    with pytest.raises(CallNotFound, match=sid):
        records.apply_status(sid, RINGING)
    assert raw_items(dynamodb, sid) == []


def test_replay_finishes_a_status_update_cut_short(records: CallRecords, dynamodb: "DynamoDBClient") -> None:
    call = make_call()
    records.create_call(call)
    # As if an earlier delivery wrote the status item and died before updating the call.
    cut_short = CallRecords(TABLE, dynamodb)
    cut_short._advance_call = lambda *_: False  # type: ignore[method-assign]
    assert cut_short.apply_status(call.call_sid, RINGING) is True
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert stored.status is CallStatus.QUEUED

    assert records.apply_status(call.call_sid, RINGING) is True
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert stored.status is CallStatus.RINGING
    assert records.apply_status(call.call_sid, RINGING) is False


# -- listings -------------------------------------------------------------------------------------------


def _page_through(fetch: Callable[[str | None], tuple[list[Call], str | None]]) -> list[list[Call]]:
    pages: list[list[Call]] = []
    cursor: str | None = None
    while True:
        calls, cursor = fetch(cursor)
        pages.append(calls)
        if cursor is None:
            return pages
        assert len(pages) < 20, "paging does not end"


def test_calls_of_agent_in_a_time_range(records: CallRecords) -> None:
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=5)
    inside = [make_call(created_at=start + timedelta(hours=hour)) for hour in range(5)]  # both bounds included
    outside = [
        make_call(created_at=start - timedelta(microseconds=1)),
        make_call(created_at=end + timedelta(microseconds=1)),
        make_call(created_at=T0 - timedelta(days=3)),
    ]
    other_agent = [make_call(agent_id="sales", created_at=start + timedelta(minutes=30))]
    for call in [*outside, *reversed(inside), *other_agent]:
        records.create_call(call)
    records.apply_status(inside[2].call_sid, RINGING)

    newest_first = list(reversed(inside))
    page = records.calls_of_agent("front-desk", start, end)
    assert [c.call_sid for c in page.calls] == [c.call_sid for c in newest_first]
    assert page.cursor is None
    assert page.calls[2].status is CallStatus.RINGING

    def fetch(cursor: str | None) -> tuple[list[Call], str | None]:
        result = records.calls_of_agent("front-desk", start, end, limit=2, cursor=cursor)
        return result.calls, result.cursor

    pages = _page_through(fetch)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [c.call_sid for p in pages for c in p] == [c.call_sid for c in newest_first]

    # An exact multiple of the limit still ends without an empty page.
    def fetch_four(cursor: str | None) -> tuple[list[Call], str | None]:
        result = records.calls_of_agent("front-desk", start, end - timedelta(hours=1), limit=2, cursor=cursor)
        return result.calls, result.cursor

    assert [len(p) for p in _page_through(fetch_four)] == [2, 2]

    sales = records.calls_of_agent("sales", start, end)
    assert [c.call_sid for c in sales.calls] == [other_agent[0].call_sid]
    assert records.calls_of_agent("nobody", start, end).calls == []


def test_calls_by_phone_uses_the_customer_number(records: CallRecords) -> None:
    inbound = make_call(direction=CallDirection.INBOUND, created_at=T0)
    outbound = make_call(direction=CallDirection.OUTBOUND, created_at=T0 + timedelta(minutes=5))
    stranger = make_call(customer="+15550100002", created_at=T0 + timedelta(minutes=10))
    for call in (inbound, outbound, stranger):
        records.create_call(call)
    day = (T0 - timedelta(hours=1), T0 + timedelta(hours=1))

    page = records.calls_by_phone(CUSTOMER, *day)
    assert [c.call_sid for c in page.calls] == [outbound.call_sid, inbound.call_sid]
    assert [c.direction for c in page.calls] == [CallDirection.OUTBOUND, CallDirection.INBOUND]
    assert [c.call_sid for c in records.calls_by_phone("+15550100002", *day).calls] == [stranger.call_sid]
    # Our own number is on every call but is never the customer.
    assert records.calls_by_phone(OUR_NUMBER, *day).calls == []

    first = records.calls_by_phone(CUSTOMER, *day, limit=1)
    assert [c.call_sid for c in first.calls] == [outbound.call_sid]
    assert first.cursor is not None
    second = records.calls_by_phone(CUSTOMER, *day, limit=1, cursor=first.cursor)
    assert [c.call_sid for c in second.calls] == [inbound.call_sid]
    assert second.cursor is None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_bad_cursors_are_refused(records: CallRecords) -> None:
    start, end = T0, T0 + timedelta(hours=3)
    for hour in range(3):
        records.create_call(make_call(created_at=T0 + timedelta(hours=hour)))
    good = records.calls_of_agent("front-desk", start, end, limit=1).cursor
    assert good is not None
    key = json.loads(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    phone_cursor = records.calls_by_phone(CUSTOMER, start, end, limit=1).cursor
    assert phone_cursor is not None

    garbage = [
        "",
        "not a cursor!",
        "%%%%",
        "A",
        "x" * 5000,
        _b64(b"\xff\xfe"),
        _b64(b"not json"),
        _b64(b"[1, 2]"),
        _b64(json.dumps({**key, "pk": 3}).encode()),
        _b64(json.dumps({k: v for k, v in key.items() if k != BY_AGENT_SK}).encode()),
        _b64(json.dumps({**key, "extra": "x"}).encode()),
        _b64(json.dumps({**key, "sk": "TURN#000001"}).encode()),
        _b64(json.dumps({**key, "pk": "CALL#nope"}).encode()),
        phone_cursor,
    ]
    for cursor in garbage:
        with pytest.raises(ValueError, match="invalid cursor"):
            records.calls_of_agent("front-desk", start, end, limit=1, cursor=cursor)

    with pytest.raises(ValueError, match="different listing"):
        records.calls_of_agent("sales", start, end, limit=1, cursor=good)
    with pytest.raises(ValueError, match="different listing"):
        records.calls_of_agent("front-desk", end + timedelta(days=1), end + timedelta(days=2), cursor=good)
    # The untouched cursor still works.
    assert len(records.calls_of_agent("front-desk", start, end, limit=1, cursor=good).calls) == 1


def test_listing_arguments_are_checked(records: CallRecords) -> None:
    with pytest.raises(ValueError, match="limit"):
        records.calls_of_agent("front-desk", T0, T0 + timedelta(hours=1), limit=0)
    with pytest.raises(ValueError, match="start is after end"):
        records.calls_of_agent("front-desk", T0 + timedelta(hours=1), T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        records.calls_by_phone(CUSTOMER, datetime(2026, 3, 2), T0)
    with pytest.raises(ValueError, match="String should match pattern"):
        records.calls_by_phone("5550100001", T0, T0 + timedelta(hours=1))
    with pytest.raises(ValueError, match="String should match pattern"):
        records.calls_of_agent("AGENT#x", T0, T0 + timedelta(hours=1))


# -- retention ------------------------------------------------------------------------------------------


def test_ttl_on_every_item_when_retention_is_set(dynamodb: "DynamoDBClient") -> None:
    store = CallRecords(TABLE, dynamodb, retention_days=30)
    call = make_call()
    store.create_call(call)
    call_key = {TABLE_PK: {"S": f"CALL#{call.call_sid}"}, TABLE_SK: {"S": "CALL"}}
    expiry_at_create = dynamodb.get_item(TableName=TABLE, Key=call_key)["Item"][TTL_ATTRIBUTE]
    turn = make_turn(call.call_sid, 0)
    store.put_turn(turn)
    store.put_tool_invocation(make_tool(call.call_sid, "t1", T0 + timedelta(seconds=3)))
    store.apply_status(call.call_sid, IN_PROGRESS)
    store.apply_status(call.call_sid, COMPLETED)

    items = {item["sk"]["S"]: item for item in raw_items(dynamodb, call.call_sid)}
    assert len(items) == 5
    expected = {
        "CALL": T0,
        "TURN#000000": turn.started_at,
        "TOOL#t1": T0 + timedelta(seconds=3),
        "STATUS#000002": IN_PROGRESS.at,
        "STATUS#000003": COMPLETED.at,
    }
    for sk, at in expected.items():
        assert items[sk][TTL_ATTRIBUTE] == {"N": str(int((at + timedelta(days=30)).timestamp()))}
    # The status updates leave the call item's expiry alone.
    assert dynamodb.get_item(TableName=TABLE, Key=call_key)["Item"][TTL_ATTRIBUTE] == expiry_at_create


def test_no_ttl_without_retention(records: CallRecords, dynamodb: "DynamoDBClient") -> None:
    call = make_call()
    records.create_call(call)
    records.put_turn(make_turn(call.call_sid, 0))
    assert all(TTL_ATTRIBUTE not in item for item in raw_items(dynamodb, call.call_sid))


def test_retention_must_be_positive() -> None:
    with pytest.raises(ValueError, match="retention_days"):
        CallRecords(TABLE, retention_days=0)


def test_end_conversation_first_reason_wins(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    assert records.end_conversation(call.call_sid, "agent_hung_up") is True
    assert records.end_conversation(call.call_sid, "transferred") is False
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert stored.conversation_ended == "agent_hung_up"


def test_end_conversation_of_unknown_call_raises(records: CallRecords) -> None:
    with pytest.raises(CallNotFound):
        records.end_conversation(make_call().call_sid, "idle")


def test_stream_resumes_stop_at_the_limit(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    assert [records.take_stream_resume(call.call_sid, 2) for _ in range(3)] == [1, 2, None]
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert stored.stream_resumes == 2
    with pytest.raises(CallNotFound):
        records.take_stream_resume(make_call().call_sid, 2)


# -- writes for the Twilio webhooks -------------------------------------------------------------------------


def test_ensure_call_creates_once_and_takes_the_same_parties_as_a_replay(records: CallRecords) -> None:
    call = make_call()
    assert records.ensure_call(call) is True
    # The webhook stamps created_at with its own clock: a replay comes with another time.
    assert records.ensure_call(call.model_copy(update={"created_at": T0 + timedelta(seconds=3)})) is False
    assert records.get_call(call.call_sid) == call
    with pytest.raises(ConflictingRecord):
        records.ensure_call(call.model_copy(update={"agent_id": "other-agent"}))


def test_a_status_event_recorded_before_its_call_joins_the_history(records: CallRecords) -> None:
    call = make_call(direction=CallDirection.OUTBOUND)
    initiated = StatusEvent(status=CallStatus.INITIATED, sequence_number=0, at=T0)
    assert records.record_status_event(call.call_sid, initiated) is True
    assert records.record_status_event(call.call_sid, initiated) is False
    assert records.get_call(call.call_sid) is None
    with pytest.raises(ConflictingRecord):
        records.record_status_event(call.call_sid, initiated.model_copy(update={"at": T0 + timedelta(seconds=1)}))
    records.create_call(call)
    ringing = StatusEvent(status=CallStatus.RINGING, sequence_number=1, at=T0 + timedelta(seconds=1))
    records.apply_status(call.call_sid, ringing)
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert stored.status_history == [initiated, ringing]
    assert stored.status is CallStatus.RINGING


def test_answered_by_first_value_stays(records: CallRecords) -> None:
    call = make_call(direction=CallDirection.OUTBOUND)
    records.create_call(call)
    assert records.record_answered_by(call.call_sid, "machine_end_beep") is True
    assert records.record_answered_by(call.call_sid, "human") is False
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert stored.answered_by == "machine_end_beep"
    with pytest.raises(CallNotFound):
        records.record_answered_by(new_sid(), "human")


def test_voicemail_outcome_is_stored_on_the_call_item(records: CallRecords, dynamodb: "DynamoDBClient") -> None:
    call = make_call(direction=CallDirection.OUTBOUND)
    records.create_call(call)
    records.record_voicemail_outcome(call.call_sid, "left_message")
    [item] = [item for item in raw_items(dynamodb, call.call_sid) if item[TABLE_SK] == {"S": "CALL"}]
    assert item["voicemail_outcome"] == {"S": "left_message"}
    assert records.get_call(call.call_sid) == call  # not a Call field: the model reads back unchanged
    with pytest.raises(CallNotFound):
        records.record_voicemail_outcome(new_sid(), "hung_up")


def test_an_event_claim_goes_to_one_caller_until_released(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    stale = timedelta(minutes=2)
    assert records.claim_event(call.call_sid, "CallCompleted", "first", T0, stale) is True
    assert records.claim_event(call.call_sid, "CallCompleted", "second", T0, stale) is False
    assert records.claim_event(call.call_sid, "CallStarted", "second", T0, stale) is True  # per event type
    assert records.release_event(call.call_sid, "CallCompleted", "second") is False  # not its claim
    assert records.release_event(call.call_sid, "CallCompleted", "first") is True
    assert records.claim_event(call.call_sid, "CallCompleted", "second", T0, stale) is True
    assert records.event_published_at(call.call_sid, "CallCompleted") is None
    assert records.confirm_event(call.call_sid, "CallCompleted", "first", T0) is False
    assert records.confirm_event(call.call_sid, "CallCompleted", "second", T0) is True
    assert records.event_published_at(call.call_sid, "CallCompleted") == "2026-03-02T09:00:00.000000Z"
    # Published: neither released nor taken over, however late.
    assert records.release_event(call.call_sid, "CallCompleted", "second") is False
    assert records.claim_event(call.call_sid, "CallCompleted", "third", T0 + timedelta(days=1), stale) is False


def test_a_stale_unpublished_claim_is_taken_over(records: CallRecords) -> None:
    call = make_call()
    records.create_call(call)
    stale = timedelta(minutes=2)
    assert records.claim_event(call.call_sid, "CallCompleted", "died", T0, stale) is True
    assert records.claim_event(call.call_sid, "CallCompleted", "early", T0 + timedelta(minutes=1), stale) is False
    assert records.claim_event(call.call_sid, "CallCompleted", "late", T0 + timedelta(minutes=3), stale) is True
    assert records.confirm_event(call.call_sid, "CallCompleted", "died", T0) is False
    assert records.confirm_event(call.call_sid, "CallCompleted", "late", T0 + timedelta(minutes=3)) is True


def test_event_claims_need_a_recorded_call_and_a_plain_event_type(records: CallRecords) -> None:
    with pytest.raises(CallNotFound):
        records.claim_event(new_sid(), "CallCompleted", "token", T0, timedelta(minutes=2))
    call = make_call()
    records.create_call(call)
    with pytest.raises(ValueError, match="not an event type"):
        records.claim_event(call.call_sid, "Call Completed; DROP", "token", T0, timedelta(minutes=2))


def test_concurrent_event_claims_have_one_winner(records: CallRecords, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models import DynamoDBBackend

    # As above: make moto's check-then-write atomic, as DynamoDB's conditional update is.
    lock = threading.Lock()
    original_update = DynamoDBBackend.update_item

    def atomic_update(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original_update(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "update_item", atomic_update)
    call = make_call()
    records.create_call(call)
    barrier = threading.Barrier(8)

    def claim(n: int) -> bool:
        barrier.wait()
        return records.claim_event(call.call_sid, "CallCompleted", f"token-{n}", T0, timedelta(minutes=2))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(claim, range(8)))
    assert sorted(results) == [False] * 7 + [True]


def test_fill_outbound_request_only_where_the_call_has_no_facts(records: CallRecords) -> None:
    call = make_call(direction=CallDirection.OUTBOUND)
    records.create_call(call)
    assert records.fill_outbound_request(call.call_sid, attempt=2, facts={"patient_name": "Sam"}) is True
    stored = records.get_call(call.call_sid)
    assert stored is not None
    assert (stored.attempt, stored.facts) == (2, {"patient_name": "Sam"})
    assert records.fill_outbound_request(call.call_sid, attempt=3, facts={"patient_name": "Alex"}) is False
    assert records.fill_outbound_request(make_call().call_sid, attempt=1, facts={}) is False
