"""switchboard.dialing at fixed instants: moto for DynamoDB and Scheduler, the local Twilio stub for calls.

The clock is the Dialer's and the Pacer's own parameter, so calling hours, deferrals and retry times are
checked at chosen moments; tests/functions/test_dialer.py runs the same paths through the Lambda.
"""

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from switchboard.agent import AgentConfig, AgentDirectory
from switchboard.call import CallDirection, CallStatus
from switchboard.dial import DialIntent, DialRequest, DialStatus, ScheduledDial
from switchboard.dialing import (
    CallCompleted,
    Dialer,
    DialIdConflict,
    DialIntents,
    DialRateLimited,
    Pacer,
    RetryDecision,
    deferral_name,
)
from switchboard.outbound import DoNotCallList, RefusalReason, do_not_call_table_definition
from switchboard.records import CallRecords, table_definition
from switchboard.schedules import DialSchedules
from switchboard.twilio_rest import twilio_client
from tests.support.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, TwilioStub

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_scheduler.client import EventBridgeSchedulerClient

TABLE = "switchboard-calls"
DNC_TABLE = "switchboard-dnc"
GROUP = "switchboard"
DIALER_ARN = "arn:aws:lambda:us-east-1:123456789012:function:dialer"
ROLE_ARN = "arn:aws:iam::123456789012:role/scheduler"
PUBLIC_API_URL = "https://voice.example.com/prod"
FROM = "+15550100300"
NEW_YORK = "+12125550123"
# A Thursday in winter (UTC-5 in New York): 12:00 there is inside 09:00-17:00, 20:00 is not.
NOON_NY = datetime(2026, 1, 15, 17, 0, tzinfo=UTC)
EVENING_NY = datetime(2026, 1, 16, 1, 0, tzinfo=UTC)
NEXT_MORNING_NY = datetime(2026, 1, 16, 14, 0, tzinfo=UTC)


def agent(**outbound: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "id": "reminder",
            "name": "Reminders",
            "directions": ["outbound"],
            "voice": {"id": "Matthew"},
            "greeting": "Hello.",
            "system_prompt": "Remind.",
            "outbound": {
                "from_number": FROM,
                "allowed_countries": ["US"],
                "calling_hours": {"open": "09:00", "close": "17:00"},
                "max_attempts": 3,
                "retry_after_minutes": 90,
                **outbound,
            },
        }
    )


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    dynamodb: "DynamoDBClient"
    scheduler: "EventBridgeSchedulerClient"
    stub: TwilioStub
    clock: Clock
    records: CallRecords
    intents: DialIntents
    sleeps: list[float] = field(default_factory=list)

    def dialer(self, config: AgentConfig | None = None, *, max_wait_s: int = 10, api_base: str | None = None) -> Dialer:
        pacer = Pacer(
            TABLE,
            self.dynamodb,
            max_wait_s=max_wait_s,
            clock=lambda: self.clock().timestamp(),
            sleep=self.sleeps.append,
        )
        return Dialer(
            agents=AgentDirectory({Path("reminder.yaml"): config or agent()}),
            intents=self.intents,
            pacer=pacer,
            records=self.records,
            twilio=lambda: twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base or self.stub.url),
            schedules=DialSchedules(group=GROUP, target_arn=DIALER_ARN, role_arn=ROLE_ARN, client=self.scheduler),
            public_api_url=PUBLIC_API_URL,
            do_not_call=DoNotCallList(DNC_TABLE, self.dynamodb),
            clock=self.clock,
        )

    def schedule(self, name: str) -> dict[str, Any]:
        return dict(self.scheduler.get_schedule(Name=name, GroupName=GROUP))

    def schedule_names(self) -> list[str]:
        return [entry["Name"] for entry in self.scheduler.list_schedules(GroupName=GROUP)["Schedules"]]

    def pacing_slots(self) -> list[dict[str, Any]]:
        items = self.dynamodb.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"PACE#{FROM}"}},
        )["Items"]
        return [{"second": int(item["second"]["N"]), "dial_id": item["dial_id"]["S"]} for item in items]


@pytest.fixture
def world(aws_env: None, twilio_stub: TwilioStub) -> Iterator[World]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(**table_definition(TABLE))
        dynamodb.create_table(**do_not_call_table_definition(DNC_TABLE))
        scheduler = boto3.client("scheduler")
        scheduler.create_schedule_group(Name=GROUP)
        yield World(
            dynamodb=dynamodb,
            scheduler=scheduler,
            stub=twilio_stub,
            clock=Clock(NOON_NY),
            records=CallRecords(TABLE, dynamodb),
            intents=DialIntents(TABLE, dynamodb),
        )


def dial(**fields: Any) -> DialRequest:
    return DialRequest.model_validate({"agent_id": "reminder", "to": NEW_YORK, **fields})


# -- pacing ---------------------------------------------------------------------------------------------


def test_each_dial_gets_its_own_second_and_waits_for_it(world: World) -> None:
    pacer = Pacer(TABLE, world.dynamodb, max_wait_s=5, clock=lambda: 1000.25, sleep=world.sleeps.append)
    assert [pacer.acquire(FROM, f"d{n}") for n in range(3)] == [1000, 1001, 1002]
    # The first second has begun: no wait; the next two start 0.75 s and 1.75 s from now.
    assert world.sleeps == [0.75, 1.75]
    assert sorted((slot["second"], slot["dial_id"]) for slot in world.pacing_slots()) == [
        (1000, "d0"),
        (1001, "d1"),
        (1002, "d2"),
    ]


def test_pacing_is_per_from_number(world: World) -> None:
    pacer = Pacer(TABLE, world.dynamodb, max_wait_s=0, clock=lambda: 1000.0, sleep=world.sleeps.append)
    assert pacer.acquire(FROM, "a") == 1000
    assert pacer.acquire("+15550100301", "b") == 1000


def test_no_free_second_within_the_bound_is_none(world: World) -> None:
    pacer = Pacer(TABLE, world.dynamodb, max_wait_s=1, clock=lambda: 1000.0, sleep=world.sleeps.append)
    assert pacer.acquire(FROM, "a") == 1000
    assert pacer.acquire(FROM, "b") == 1001
    assert pacer.acquire(FROM, "c") is None


def test_a_slot_expires_by_ttl(world: World) -> None:
    Pacer(TABLE, world.dynamodb, clock=lambda: 1000.0, sleep=world.sleeps.append).acquire(FROM, "a")
    item = world.dynamodb.get_item(
        TableName=TABLE, Key={"pk": {"S": f"PACE#{FROM}"}, "sk": {"S": "SECOND#000000001000"}}
    )["Item"]
    assert item["expires_at"] == {"N": "4600"}


# -- dial intents ---------------------------------------------------------------------------------------


def test_an_intent_opens_once_and_moves_only_from_the_state_it_expects(world: World) -> None:
    fresh = DialIntent(
        dial_id="d1",
        agent_id="reminder",
        to_number=NEW_YORK,
        attempt=1,
        facts={"patient_name": "Ada"},
        source="api",
        status=DialStatus.RECEIVED,
        requested_at=NOON_NY,
        updated_at=NOON_NY,
    )
    assert world.intents.open(fresh) == (fresh, True)
    assert world.intents.open(fresh) == (fresh, False)
    moved = world.intents.move("d1", DialStatus.RECEIVED, DialStatus.DIALING, NOON_NY, pacing_second=7, call_sid=None)
    assert moved is not None
    assert (moved.status, moved.pacing_second, moved.call_sid) == (DialStatus.DIALING, 7, None)
    assert world.intents.move("d1", DialStatus.RECEIVED, DialStatus.REFUSED, NOON_NY) is None
    assert world.intents.get("d1") == moved
    assert world.intents.get("nope") is None


# -- dialing --------------------------------------------------------------------------------------------


def test_a_dial_inside_hours_calls_twilio_then_records_the_call(world: World) -> None:
    result = world.dialer().dial(dial(facts={"patient_name": "Ada"}, dial_id="first"))
    intent = result.intent
    assert (intent.status, intent.dial_id, intent.from_number, result.replayed) == (
        DialStatus.DIALED,
        "first",
        FROM,
        False,
    )
    [create] = world.stub.of("create_call")
    assert create.param("To") == NEW_YORK
    assert create.param("Url") == f"{PUBLIC_API_URL}/twilio/voice?agent_id=reminder"
    assert intent.call_sid is not None
    call = world.records.get_call(intent.call_sid)
    assert call is not None
    assert (call.direction, call.from_number, call.to_number, call.attempt, call.facts) == (
        CallDirection.OUTBOUND,
        FROM,
        NEW_YORK,
        1,
        {"patient_name": "Ada"},
    )
    assert intent.pacing_second == int(NOON_NY.timestamp())


def test_a_repeated_dial_id_is_not_dialed_again(world: World) -> None:
    dialer = world.dialer()
    first = dialer.dial(dial(dial_id="once"))
    again = dialer.dial(dial(dial_id="once"))
    assert again.replayed
    assert again.intent == first.intent
    assert len(world.stub.of("create_call")) == 1
    with pytest.raises(DialIdConflict):
        dialer.dial(dial(dial_id="once", to="+14155550123"))


def test_an_intent_left_received_is_taken_up(world: World) -> None:
    # An earlier delivery recorded the dial and stopped before asking Twilio (a timeout, a crash).
    left = DialIntent(
        dial_id="left",
        agent_id="reminder",
        to_number=NEW_YORK,
        from_number=FROM,
        attempt=1,
        source="api",
        status=DialStatus.RECEIVED,
        requested_at=NOON_NY,
        updated_at=NOON_NY,
    )
    world.intents.open(left)
    result = world.dialer().dial(dial(dial_id="left"))
    assert result.intent.status is DialStatus.DIALED
    assert len(world.stub.of("create_call")) == 1


def test_outside_hours_an_api_dial_is_refused_with_the_next_allowed_moment(world: World) -> None:
    world.clock.now = EVENING_NY
    result = world.dialer().dial(dial(dial_id="late"))
    assert result.intent.status is DialStatus.REFUSED
    assert result.intent.reason == RefusalReason.OUTSIDE_CALLING_HOURS
    assert result.intent.next_allowed_at == NEXT_MORNING_NY
    assert world.stub.of("create_call") == []
    assert world.pacing_slots() == []


def test_outside_hours_a_scheduled_dial_is_deferred_to_a_new_one_time_schedule(world: World) -> None:
    world.clock.now = EVENING_NY
    scheduled = ScheduledDial(
        agent_id="reminder",
        to=NEW_YORK,
        facts={"patient_name": "Ada"},
        attempt=2,
        dial_id="camp.0",
        scheduled_time=EVENING_NY,
    )
    dialer = world.dialer()
    result = dialer.dial_scheduled(scheduled)
    name = deferral_name("camp.0@20260116T010000Z")
    assert (result.intent.status, result.intent.deferred_to, result.intent.next_allowed_at) == (
        DialStatus.DEFERRED,
        name,
        NEXT_MORNING_NY,
    )
    schedule = world.schedule(name)
    assert schedule["ScheduleExpression"] == "at(2026-01-16T14:00:00)"
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert json.loads(schedule["Target"]["Input"]) == {
        "agent_id": "reminder",
        "to": NEW_YORK,
        "facts": {"patient_name": "Ada"},
        "attempt": 2,
        "dial_id": name,
    }
    # A second delivery of the same firing changes nothing.
    assert dialer.dial_scheduled(scheduled).replayed
    assert world.schedule_names() == [name]
    assert world.stub.of("create_call") == []
    # When the deferral fires, inside the hours, it dials.
    world.clock.now = NEXT_MORNING_NY
    later = ScheduledDial.model_validate_json(schedule["Target"]["Input"])
    assert dialer.dial_scheduled(later).intent.status is DialStatus.DIALED


def test_a_scheduled_dial_with_no_free_second_is_deferred_a_minute(world: World) -> None:
    dialer = world.dialer(max_wait_s=0)
    Pacer(TABLE, world.dynamodb, clock=lambda: NOON_NY.timestamp()).acquire(FROM, "someone-else")
    result = dialer.dial_scheduled(ScheduledDial(agent_id="reminder", to=NEW_YORK, dial_id="busy-line"))
    assert (result.intent.status, result.intent.reason) == (DialStatus.DEFERRED, "rate_limited")
    assert world.schedule(deferral_name("busy-line"))["ScheduleExpression"] == "at(2026-01-15T17:01:00)"
    # From the API, the client hears it instead, and its retry with the same dial id dials.
    with pytest.raises(DialRateLimited):
        dialer.dial(dial(dial_id="api-busy"))
    left = world.intents.get("api-busy")
    assert left is not None
    assert left.status is DialStatus.RECEIVED
    world.clock.now += timedelta(seconds=1)
    assert dialer.dial(dial(dial_id="api-busy")).intent.status is DialStatus.DIALED


def test_a_number_on_the_do_not_call_list_is_refused_even_at_night(world: World) -> None:
    DoNotCallList(DNC_TABLE, world.dynamodb).add(NEW_YORK, reason="asked on a call", at=NOON_NY)
    world.clock.now = EVENING_NY
    result = world.dialer().dial_scheduled(ScheduledDial(agent_id="reminder", to=NEW_YORK, dial_id="dnc"))
    # Refused, not deferred: no later moment makes it callable.
    assert (result.intent.status, result.intent.reason) == (DialStatus.REFUSED, RefusalReason.DO_NOT_CALL)
    assert world.schedule_names() == []


def test_an_unknown_agent_is_recorded_as_refused(world: World) -> None:
    result = world.dialer().dial(dial(agent_id="nobody"))
    assert (result.intent.status, result.intent.reason, result.intent.from_number) == (
        DialStatus.REFUSED,
        RefusalReason.UNKNOWN_AGENT,
        None,
    )


def test_twilio_unreachable_marks_the_intent_failed(world: World) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    result = world.dialer(api_base=f"http://127.0.0.1:{closed_port}").dial(dial(dial_id="nowhere"))
    assert (result.intent.status, result.intent.reason) == (DialStatus.FAILED, "twilio_unreachable")
    assert result.intent.call_sid is None


# -- retries --------------------------------------------------------------------------------------------


def completed(call_sid: str, status: CallStatus = CallStatus.NO_ANSWER, **fields: Any) -> CallCompleted:
    return CallCompleted.model_validate(
        {
            "call_sid": call_sid,
            "agent_id": "reminder",
            "at": NOON_NY.isoformat(),
            "status": status.value,
            "direction": "outbound",
            "attempt": 1,
            **fields,
        }
    )


def test_a_retry_lands_at_the_next_allowed_moment_after_the_wait(world: World) -> None:
    dialer = world.dialer()
    world.clock.now = datetime(2026, 1, 15, 21, 0, tzinfo=UTC)  # 16:00 in New York
    sid = dialer.dial(dial(facts={"patient_name": "Ada"})).intent.call_sid
    assert sid is not None
    outcome = dialer.retry(completed(sid))
    # 16:00 + 90 min is 17:30, after closing: the next morning at 09:00.
    assert (outcome.decision, outcome.schedule_name, outcome.at) == (
        RetryDecision.SCHEDULED,
        f"retry-{sid}",
        NEXT_MORNING_NY,
    )
    assert json.loads(world.schedule(f"retry-{sid}")["Target"]["Input"]) == {
        "agent_id": "reminder",
        "to": NEW_YORK,
        "facts": {"patient_name": "Ada"},
        "attempt": 2,
        "dial_id": f"retry-{sid}",
    }


def test_a_retry_inside_hours_waits_the_agent_delay(world: World) -> None:
    dialer = world.dialer()
    sid = dialer.dial(dial()).intent.call_sid
    assert sid is not None
    outcome = dialer.retry(completed(sid, CallStatus.BUSY))
    assert outcome.at == NOON_NY + timedelta(minutes=90)


def test_a_retry_that_already_ran_is_not_scheduled_again(world: World) -> None:
    dialer = world.dialer()
    sid = dialer.dial(dial()).intent.call_sid
    assert sid is not None
    assert dialer.retry(completed(sid)).decision is RetryDecision.SCHEDULED
    # The schedule fired (and deleted itself): its dial intent is what remains.
    retry = ScheduledDial.model_validate_json(world.schedule(f"retry-{sid}")["Target"]["Input"])
    world.scheduler.delete_schedule(Name=f"retry-{sid}", GroupName=GROUP)
    assert dialer.dial_scheduled(retry).intent.attempt == 2
    assert dialer.retry(completed(sid)).decision is RetryDecision.ALREADY_SCHEDULED
    assert world.schedule_names() == []


@pytest.mark.parametrize(
    ("event", "decision"),
    [
        ({"status": CallStatus.COMPLETED}, RetryDecision.NOT_RETRIED_STATUS),
        ({"status": CallStatus.FAILED}, RetryDecision.NOT_RETRIED_STATUS),
        ({"direction": "inbound"}, RetryDecision.NOT_OUTBOUND),
        ({"agent_id": "nobody"}, RetryDecision.UNKNOWN_AGENT),
    ],
)
def test_calls_that_are_not_retried(world: World, event: dict[str, Any], decision: RetryDecision) -> None:
    dialer = world.dialer()
    sid = dialer.dial(dial()).intent.call_sid
    assert sid is not None
    status = event.pop("status", CallStatus.NO_ANSWER)
    assert dialer.retry(completed(sid, status, **event)).decision is decision
    assert world.schedule_names() == []


def test_retry_on_failed_when_the_agent_says_so(world: World) -> None:
    dialer = world.dialer(agent(retry_on=["failed"]))
    sid = dialer.dial(dial()).intent.call_sid
    assert sid is not None
    assert dialer.retry(completed(sid, CallStatus.FAILED)).decision is RetryDecision.SCHEDULED


def test_the_last_attempt_is_not_retried(world: World) -> None:
    dialer = world.dialer(agent(max_attempts=2))
    sid = dialer.dial(dial(attempt=2)).intent.call_sid
    assert sid is not None
    assert dialer.retry(completed(sid, attempt=2)).decision is RetryDecision.ATTEMPTS_EXHAUSTED
    assert world.schedule_names() == []
