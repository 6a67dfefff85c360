"""functions/tool_actions: POST /tools/{name} with IAM-authorized API Gateway events, moto for AWS (DynamoDB
calls, appointments and idempotency tables, Secrets Manager, EventBridge → SQS) and the local Twilio REST
stub for the real twilio client."""

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend

from functions.tool_actions import handler
from switchboard.booking import APPOINTMENTS_PK, CALENDAR_PREFIX, appointments_table_definition, slot_key
from switchboard.call import Call, CallDirection
from switchboard.observability import metrics
from switchboard.records import CallRecords, CallTimeline, table_definition
from switchboard.sms import SMS_SENT_ATTRIBUTE
from switchboard.tool import ToolName, ToolOutcome, ToolRequest, ToolResult
from switchboard.tool_actions import IDEMPOTENCY_KEY_PREFIX, ToolCall, ToolCallInProgress
from tests.support.apigw import LambdaContext, json_event, response_json
from tests.support.event_bus import PublishedEvents
from tests.support.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, TwilioStub, random_call_sid

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext as PowertoolsContext
    from mypy_boto3_dynamodb.client import DynamoDBClient

REPO = Path(__file__).resolve().parents[2]
CALLS = "switchboard-calls"
APPOINTMENTS = "switchboard-appointments"
IDEMPOTENCY = "switchboard-idempotency"
BUS = "switchboard-calls"
STREAMING_ROLE = "arn:aws:sts::123456789012:assumed-role/switchboard-streaming-task/1a2b3c"
ZONE = ZoneInfo("America/New_York")  # both clinic agents' calendar

CLINIC_NUMBER = "+15550100200"  # answered by agents/clinic-receptionist.yaml
FRONT_DESK = "+15550100100"  # its transfer allow-list
REMINDER_NUMBER = "+15550100300"  # agents/appointment-reminder.yaml calls from it
RISKY_NUMBER = "+15550100900"  # the test's agent with bad numbers on its allow-list
CALLER = "+15557654321"
PATIENT = "+15557650001"
STRANGER = "+15557659999"

# An inbound agent whose transfer allow-list holds a premium-rate and a foreign number beside a good one:
# the numbers themselves must be checked, not only the names.
RISKY_AGENT = """\
id: risky-lines
name: An agent with a careless allow-list
directions: [inbound]
voice: {id: Joanna}
greeting: "Hello."
system_prompt: "You transfer callers."
phone_numbers: ["+15550100900"]
tools:
  transfer_call:
    allow:
      front_desk: "+15550100100"
      hotline: "+19005550123"
      london: "+442071838750"
  end_call: {}
"""


class _AtomicMotoDynamoDB:
    """DynamoDB checks a condition and writes atomically; moto checks then writes in plain Python, so under
    threads it could let two conditional writes through. One lock over moto's DynamoDB backend restores
    DynamoDB's guarantee (the code under test is untouched)."""

    METHODS = ("put_item", "update_item", "delete_item", "get_item", "query", "scan", "transact_write_items")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        lock = threading.RLock()
        for name in self.METHODS:
            original = getattr(DynamoDBBackend, name)
            monkeypatch.setattr(DynamoDBBackend, name, self._locked(original, lock))

    @staticmethod
    def _locked(method: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
        def locked(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(self, *args, **kwargs)

        return locked


@dataclass(frozen=True)
class Env:
    records: CallRecords
    dynamodb: "DynamoDBClient"
    bus: PublishedEvents
    twilio: TwilioStub

    def published(self) -> list[dict[str, Any]]:
        """Every event that reached the bus since the last look."""
        return self.bus.drain()

    def timeline(self, sid: str) -> CallTimeline:
        timeline = self.records.timeline(sid)
        assert timeline is not None
        return timeline

    def call(self, sid: str) -> Call:
        call = self.records.get_call(sid)
        assert call is not None
        return call

    def appointments(self) -> dict[str, dict[str, Any]]:
        """Booked slots by their sort key (SLOT#<utc>), each as plain attributes."""
        items = self.dynamodb.scan(TableName=APPOINTMENTS)["Items"]
        return {
            item["sk"]["S"]: {name: next(iter(value.values())) for name, value in item.items()}
            for item in items
            if item[APPOINTMENTS_PK]["S"].startswith(CALENDAR_PREFIX)
        }

    def sms_sent(self, sid: str) -> int:
        item = self.dynamodb.get_item(TableName=CALLS, Key={"pk": {"S": f"CALL#{sid}"}, "sk": {"S": "CALL"}})["Item"]
        return int(item[SMS_SENT_ATTRIBUTE]["N"]) if SMS_SENT_ATTRIBUTE in item else 0


@pytest.fixture
def env(aws_env: None, twilio_stub: TwilioStub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Env]:
    agents_dir = tmp_path / "agents"
    shutil.copytree(REPO / "agents", agents_dir)
    (agents_dir / "risky-lines.yaml").write_text(RISKY_AGENT)
    with mock_aws():
        _AtomicMotoDynamoDB(monkeypatch)
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(**table_definition(CALLS))
        dynamodb.create_table(**appointments_table_definition(APPOINTMENTS))
        # Powertools' documented idempotency table: partition key `id`, TTL on `expiration`.
        dynamodb.create_table(
            TableName=IDEMPOTENCY,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.update_time_to_live(
            TableName=IDEMPOTENCY, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"}
        )
        secrets = boto3.client("secretsmanager")
        twilio_secret = secrets.create_secret(
            Name="switchboard/twilio", SecretString=json.dumps({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN})
        )["ARN"]
        events = boto3.client("events")
        events.create_event_bus(Name=BUS)
        bus = PublishedEvents(BUS)
        for name, value in {
            "CALLS_TABLE": CALLS,
            "APPOINTMENTS_TABLE": APPOINTMENTS,
            "IDEMPOTENCY_TABLE": IDEMPOTENCY,
            "EVENT_BUS_NAME": BUS,
            "AGENTS_DIR": str(agents_dir),
            "TWILIO_SECRET_ARN": twilio_secret,
            "TWILIO_API_BASE_URL": twilio_stub.url,
            "POWERTOOLS_TRACE_DISABLED": "true",
        }.items():
            monkeypatch.setenv(name, value)
        handler.dependencies.cache_clear()
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        yield Env(CallRecords(CALLS, dynamodb), dynamodb, bus, twilio_stub)
        handler.dependencies.cache_clear()
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        metrics.clear_metrics()


# -- calls, days and requests ----------------------------------------------------------------------------


def inbound_call(
    env: Env, *, caller: str = CALLER, agent_number: str = CLINIC_NUMBER, agent: str = "clinic-receptionist"
) -> str:
    sid = random_call_sid()
    env.records.create_call(
        Call(
            call_sid=sid,
            direction=CallDirection.INBOUND,
            from_number=caller,
            to_number=agent_number,
            agent_id=agent,
            created_at=datetime.now(UTC),
        )
    )
    return sid


def reminder_call(env: Env, *, callee: str = PATIENT, appointment_start: str | None = None) -> str:
    sid = random_call_sid()
    facts = {"patient_name": "Pat Doe"}
    if appointment_start is not None:
        facts["appointment_start"] = appointment_start
    env.records.create_call(
        Call(
            call_sid=sid,
            direction=CallDirection.OUTBOUND,
            from_number=REMINDER_NUMBER,
            to_number=callee,
            agent_id="appointment-reminder",
            created_at=datetime.now(UTC),
            facts=facts,
        )
    )
    return sid


def weekday_ahead(weekday: int, weeks: int = 1) -> date:
    """A day of the given weekday (Monday 0) at least `weeks` weeks from today in the clinic's zone."""
    day = datetime.now(ZONE).date() + timedelta(days=7 * weeks)
    while day.weekday() != weekday:
        day += timedelta(days=1)
    return day


def at(day: date, hour: int, minute: int = 0) -> str:
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}"


def utc_key(day: date, hour: int, minute: int = 0) -> str:
    return slot_key(datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE))


def event(tool: str, sid: str, arguments: dict[str, Any], *, iam: bool = True) -> dict[str, Any]:
    return json_event(
        "POST",
        f"/tools/{tool}",
        {"call_sid": sid, "arguments": arguments},
        resource="/tools/{name}",
        path_parameters={"name": tool},
        iam_user_arn=STREAMING_ROLE if iam else None,
    )


def post(tool: str, sid: str, arguments: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = handler.lambda_handler(event(tool, sid, arguments), LambdaContext())
    return response


def context() -> "PowertoolsContext":
    """The test double of Lambda's context, for ToolActions called directly (it has what Powertools reads)."""
    return cast("PowertoolsContext", LambdaContext())


def invoke(tool: str, sid: str, arguments: dict[str, Any]) -> ToolResult:
    response = post(tool, sid, arguments)
    assert response["statusCode"] == 200, response["body"]
    return ToolResult.model_validate(response_json(response))


def booking(start: str, name: str = "Jane Doe", **extra: Any) -> dict[str, Any]:
    return {"start": start, "name": name, **extra}


def tool_events(env: Env) -> list[dict[str, Any]]:
    return [published["detail"] for published in env.published() if published["detail-type"] == "ToolInvoked"]


# -- happy paths --------------------------------------------------------------------------------------


def test_book_appointment_books_an_open_slot_for_the_caller(env: Env) -> None:
    sid = inbound_call(env)
    day = weekday_ahead(1)

    result = invoke("book_appointment", sid, booking(at(day, 10, 30), reason="Check-up"))

    assert result.outcome is ToolOutcome.SUCCEEDED
    assert result.tool is ToolName.BOOK_APPOINTMENT
    assert result.message == f"Booked for {day:%A}, {day:%B} {day.day} at 10:30 AM."
    assert result.data == {
        "start": at(day, 10, 30),
        "end": at(day, 11, 0),
        "timezone": "America/New_York",
        "calendar": "maple-street",
    }
    slot = env.appointments()[utc_key(day, 10, 30)]
    assert slot["customer_number"] == CALLER
    assert slot["call_sid"] == sid
    assert slot["name"] == "Jane Doe"
    assert slot["reason"] == "Check-up"
    [tool] = env.timeline(sid).tools
    assert tool.invocation_id == result.invocation_id
    assert tool.outcome is ToolOutcome.SUCCEEDED
    assert tool.arguments == booking(at(day, 10, 30), reason="Check-up")
    [detail] = tool_events(env)
    assert detail["call_sid"] == sid
    assert detail["agent_id"] == "clinic-receptionist"
    assert {detail["tool"], detail["outcome"], detail["invocation_id"]} == {
        "book_appointment",
        "succeeded",
        result.invocation_id,
    }
    assert "555" not in json.dumps(detail)


def test_send_sms_goes_to_the_caller_from_the_number_they_called(env: Env) -> None:
    sid = inbound_call(env)

    result = invoke("send_sms", sid, {"body": "See you Tuesday at 10:30."})

    assert result.outcome is ToolOutcome.SUCCEEDED
    assert result.data is not None
    assert result.data["remaining_on_this_call"] == 1
    [sent] = env.twilio.of("create_message")
    assert (sent.param("To"), sent.param("From"), sent.param("Body")) == (
        CALLER,
        CLINIC_NUMBER,
        "See you Tuesday at 10:30.",
    )
    assert env.sms_sent(sid) == 1


def test_send_sms_on_an_outbound_call_goes_to_the_callee_from_the_agents_number(env: Env) -> None:
    sid = reminder_call(env)

    result = invoke("send_sms", sid, {"body": "Your appointment is tomorrow."})

    assert result.outcome is ToolOutcome.SUCCEEDED
    [sent] = env.twilio.of("create_message")
    assert (sent.param("To"), sent.param("From")) == (PATIENT, REMINDER_NUMBER)


def test_transfer_call_dials_the_allow_listed_line_and_ends_the_conversation(env: Env) -> None:
    sid = inbound_call(env)

    result = invoke("transfer_call", sid, {"to": "front_desk"})

    assert result.outcome is ToolOutcome.SUCCEEDED
    assert result.data == {"to": "front_desk"}
    [update] = env.twilio.of("update_call")
    assert update.path.endswith(f"/Calls/{sid}.json")
    twiml = update.param("Twiml")
    assert twiml is not None
    assert f"<Dial>{FRONT_DESK}</Dial>" in twiml
    assert env.call(sid).conversation_ended == "transferred"


def test_end_call_marks_the_conversation_over(env: Env) -> None:
    sid = inbound_call(env)

    first = invoke("end_call", sid, {"reason": "caller said goodbye"})
    again = invoke("end_call", sid, {})

    assert first.outcome is ToolOutcome.SUCCEEDED
    assert first.message == "The call will end after your goodbye."
    assert again.outcome is ToolOutcome.SUCCEEDED
    assert again.message == "The call is already ending."
    assert env.call(sid).conversation_ended == "agent_ended"
    assert env.twilio.requests == []


# -- idempotency -------------------------------------------------------------------------------------------


def test_a_replay_after_completion_gets_the_same_result_and_causes_nothing(env: Env) -> None:
    sid = inbound_call(env)
    day = weekday_ahead(2)

    sms = [invoke("send_sms", sid, {"body": "Thanks for calling."}) for _ in range(3)]
    books = [invoke("book_appointment", sid, booking(at(day, 9))) for _ in range(3)]
    # The same arguments in another order and spacing are the same tool call.
    reordered = handler.lambda_handler(
        {
            **event("send_sms", sid, {}),
            "body": '{"arguments": {"body": "Thanks for calling."}, "call_sid": "' + sid + '"}',
        },
        LambdaContext(),
    )

    assert sms[0] == sms[1] == sms[2] == ToolResult.model_validate(response_json(reordered))
    assert books[0] == books[1] == books[2]
    assert books[0].outcome is ToolOutcome.SUCCEEDED
    assert len(env.twilio.of("create_message")) == 1
    assert env.sms_sent(sid) == 1
    assert list(env.appointments()) == [utc_key(day, 9)]
    assert len(env.timeline(sid).tools) == 2
    assert len(tool_events(env)) == 2


def test_concurrent_duplicates_have_one_side_effect(env: Env) -> None:
    sid = inbound_call(env)
    day = weekday_ahead(3)
    actions = handler.dependencies().tool_actions
    requests = [
        (ToolName.SEND_SMS, ToolRequest(call_sid=sid, arguments={"body": "Your booking is confirmed."})),
        (ToolName.BOOK_APPOINTMENT, ToolRequest(call_sid=sid, arguments=booking(at(day, 14)))),
    ]
    for tool, request in requests:
        barrier = threading.Barrier(8)

        def run(
            _: int, tool: ToolName = tool, request: ToolRequest = request, barrier: threading.Barrier = barrier
        ) -> ToolResult | ToolCallInProgress:
            barrier.wait()
            try:
                return actions.invoke(tool.value, request, context())
            except ToolCallInProgress as busy:
                return busy

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(run, range(8)))
        results = [outcome for outcome in outcomes if isinstance(outcome, ToolResult)]
        # Each duplicate either waited for nothing and got the stored result, or was told to retry (409).
        assert results, outcomes
        assert all(isinstance(outcome, ToolResult | ToolCallInProgress) for outcome in outcomes)
        assert all(result == results[0] for result in results)
        assert results[0].outcome is ToolOutcome.SUCCEEDED
        # The retry a 409 asks for gets the stored result.
        assert actions.invoke(tool.value, request, context()) == results[0]

    assert len(env.twilio.of("create_message")) == 1
    assert env.sms_sent(sid) == 1
    assert list(env.appointments()) == [utc_key(day, 14)]
    assert len(env.timeline(sid).tools) == 2
    assert len(tool_events(env)) == 2


def test_a_duplicate_of_a_call_in_progress_gets_409_and_does_nothing(env: Env) -> None:
    sid = inbound_call(env)
    arguments = {"body": "On my way."}
    # The first request is running: its in-progress record is in the store, as Powertools writes it.
    store = DynamoDBPersistenceLayer(table_name=IDEMPOTENCY)
    store.configure(IdempotencyConfig(), key_prefix=IDEMPOTENCY_KEY_PREFIX)
    running = ToolCall.of(ToolName.SEND_SMS, ToolRequest(call_sid=sid, arguments=arguments))
    store.save_inprogress(data=running.model_dump(mode="json"), remaining_time_in_millis=60_000)

    response = post("send_sms", sid, arguments)

    assert response["statusCode"] == 409
    body = response_json(response)
    assert body["statusCode"] == 409
    assert "already running" in body["message"]
    assert env.twilio.requests == []
    assert env.timeline(sid).tools == []
    assert env.sms_sent(sid) == 0
    # Other arguments are another tool call: not held up.
    assert invoke("send_sms", sid, {"body": "Something else."}).outcome is ToolOutcome.SUCCEEDED


# -- policies the LLM cannot talk its way past ---------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {"body": "Hi", "to": STRANGER},
        {"body": "Hi", "phone_number": STRANGER},
        {"body": "Hi", "recipient": {"number": STRANGER}},
    ],
)
def test_an_sms_to_any_other_number_is_refused_and_nothing_is_sent(env: Env, arguments: dict[str, Any]) -> None:
    sid = inbound_call(env)

    result = invoke("send_sms", sid, arguments)

    assert result.outcome is ToolOutcome.REFUSED
    extra = next(name for name in arguments if name != "body")
    assert f"'{extra}' is not an argument of send_sms" in result.message
    assert env.twilio.requests == []
    assert env.sms_sent(sid) == 0
    [recorded] = env.timeline(sid).tools
    assert recorded.outcome is ToolOutcome.REFUSED
    assert recorded.arguments == arguments


@pytest.mark.parametrize(
    ("agent", "agent_number", "to", "reason"),
    [
        ("clinic-receptionist", CLINIC_NUMBER, FRONT_DESK, "I can only transfer to one of: front_desk."),
        ("clinic-receptionist", CLINIC_NUMBER, "+19005550123", "I can only transfer to one of: front_desk."),
        ("clinic-receptionist", CLINIC_NUMBER, "the police", "I can only transfer to one of: front_desk."),
        ("risky-lines", RISKY_NUMBER, "hotline", "The hotline line is not available for transfers"),
        ("risky-lines", RISKY_NUMBER, "london", "The london line is not available for transfers"),
    ],
)
def test_a_transfer_off_the_allow_list_or_to_a_costly_number_is_refused(
    env: Env, agent: str, agent_number: str, to: str, reason: str
) -> None:
    sid = inbound_call(env, agent=agent, agent_number=agent_number)

    result = invoke("transfer_call", sid, {"to": to})

    assert result.outcome is ToolOutcome.REFUSED
    assert result.message.startswith(reason)
    assert env.twilio.requests == []
    assert env.call(sid).conversation_ended is None


def test_the_risky_agents_good_line_still_transfers(env: Env) -> None:
    sid = inbound_call(env, agent="risky-lines", agent_number=RISKY_NUMBER)

    assert invoke("transfer_call", sid, {"to": "Front desk"}).outcome is ToolOutcome.SUCCEEDED
    assert len(env.twilio.of("update_call")) == 1


def test_a_call_that_is_over_is_not_transferred(env: Env) -> None:
    sid = inbound_call(env)
    invoke("end_call", sid, {})

    result = invoke("transfer_call", sid, {"to": "front_desk"})

    assert result.outcome is ToolOutcome.REFUSED
    assert env.twilio.requests == []


@pytest.mark.parametrize(
    ("start", "problem", "opening"),
    [
        (lambda: at(weekday_ahead(1), 7), "closed", "That time is outside opening hours."),
        (lambda: at(weekday_ahead(5), 10), "closed", "That time is outside opening hours."),  # a Saturday
        (lambda: at(weekday_ahead(1), 12, 15), "closed", "That time is outside opening hours."),
        (lambda: at(weekday_ahead(1), 10, 15), "misaligned", "Appointments are 30 minutes long"),
        (lambda: at(weekday_ahead(1), 11, 45), "misaligned", "Appointments are 30 minutes long"),
        (lambda: "2020-03-03T10:00", "past", "That time has already passed."),
        (lambda: at(weekday_ahead(1, weeks=10), 10), "too_far", "I can only book up to 60 days ahead."),
    ],
)
def test_a_booking_outside_the_policy_is_refused_with_open_slots_nearby(
    env: Env, start: Callable[[], str], problem: str, opening: str
) -> None:
    sid = inbound_call(env)

    result = invoke("book_appointment", sid, booking(start()))

    assert result.outcome is ToolOutcome.REFUSED
    assert result.message.startswith(opening)
    assert "Open slots nearby: " in result.message
    assert result.data is not None
    assert result.data["problem"] == problem
    suggestions = result.data["suggestions"]
    assert 1 <= len(suggestions) <= 3
    # Every suggestion is bookable: the agent can offer it and book it as given.
    assert env.appointments() == {}
    assert invoke("book_appointment", sid, booking(suggestions[0])).outcome is ToolOutcome.SUCCEEDED


def test_a_booking_over_another_callers_appointment_is_refused_with_the_nearest_open_slots(env: Env) -> None:
    day = weekday_ahead(1)
    first = inbound_call(env, caller=CALLER)
    assert invoke("book_appointment", first, booking(at(day, 10))).outcome is ToolOutcome.SUCCEEDED
    other = inbound_call(env, caller=STRANGER)

    result = invoke("book_appointment", other, booking(at(day, 10), name="Someone Else"))

    assert result.outcome is ToolOutcome.REFUSED
    assert result.message == (
        f"That time is already booked. Open slots nearby: {day:%A}, {day:%B} {day.day} at 9:00 AM, 9:30 AM or 10:30 AM."
    )
    assert result.data is not None
    # Nearest first (ties to the earlier), then said in time order.
    assert result.data["suggestions"] == [at(day, 9), at(day, 9, 30), at(day, 10, 30)]
    assert env.appointments()[utc_key(day, 10)]["customer_number"] == CALLER


def test_one_booking_per_call_without_rescheduling(env: Env) -> None:
    sid = inbound_call(env)
    day = weekday_ahead(4)
    assert invoke("book_appointment", sid, booking(at(day, 9))).outcome is ToolOutcome.SUCCEEDED

    second = invoke("book_appointment", sid, booking(at(day, 13)))

    assert second.outcome is ToolOutcome.REFUSED
    assert second.message == (
        f"This call has already booked an appointment, for {day:%A}, {day:%B} {day.day} at 9:00 AM; "
        "I can only book one per call."
    )
    assert list(env.appointments()) == [utc_key(day, 9)]


def test_two_calls_racing_for_one_slot_give_it_to_exactly_one(env: Env) -> None:
    day = weekday_ahead(2)
    callers = [f"+1555765{n:04d}" for n in range(8)]
    sids = [inbound_call(env, caller=caller) for caller in callers]
    actions = handler.dependencies().tool_actions
    barrier = threading.Barrier(len(sids))

    def book(sid: str) -> ToolResult:
        barrier.wait()
        return actions.invoke("book_appointment", ToolRequest(call_sid=sid, arguments=booking(at(day, 15))), context())

    with ThreadPoolExecutor(max_workers=len(sids)) as pool:
        results = list(pool.map(book, sids))

    outcomes = [result.outcome for result in results]
    assert outcomes.count(ToolOutcome.SUCCEEDED) == 1
    assert outcomes.count(ToolOutcome.REFUSED) == len(sids) - 1
    winner = sids[outcomes.index(ToolOutcome.SUCCEEDED)]
    slot = env.appointments()[utc_key(day, 15)]
    assert slot["call_sid"] == winner
    assert slot["customer_number"] == callers[sids.index(winner)]
    assert len(env.appointments()) == 1


def test_sms_are_capped_per_call(env: Env) -> None:
    sid = inbound_call(env)  # the clinic allows 2 per call

    results = [invoke("send_sms", sid, {"body": f"Message {n}"}) for n in range(3)]

    assert [result.outcome for result in results] == [ToolOutcome.SUCCEEDED, ToolOutcome.SUCCEEDED, ToolOutcome.REFUSED]
    assert results[2].message == "I have already sent the 2 text message(s) allowed on this call."
    assert [request.param("Body") for request in env.twilio.of("create_message")] == ["Message 0", "Message 1"]
    # The cap is per call: another call of the same caller may send again.
    assert invoke("send_sms", inbound_call(env), {"body": "Hello again"}).outcome is ToolOutcome.SUCCEEDED


# -- Twilio failing ------------------------------------------------------------------------------------


def test_a_failed_sms_is_reported_and_a_retry_can_succeed(env: Env) -> None:
    sid = reminder_call(env)  # the reminder agent allows 1 per call: the failed one must not use it up
    env.twilio.fail_next("create_message", status=400, code=21610, message="Attempt to send to unsubscribed recipient")

    failed = invoke("send_sms", sid, {"body": "Reminder: tomorrow 10 AM."})

    assert failed.outcome is ToolOutcome.FAILED
    assert failed.message == "The text message could not be sent."
    assert env.sms_sent(sid) == 0

    retried = invoke("send_sms", sid, {"body": "Reminder: tomorrow 10 AM."})

    assert retried.outcome is ToolOutcome.SUCCEEDED
    assert retried.invocation_id != failed.invocation_id
    assert len(env.twilio.of("create_message")) == 2
    assert env.sms_sent(sid) == 1
    recorded = {tool.invocation_id: tool for tool in env.timeline(sid).tools}
    assert failed.invocation_id is not None
    assert retried.invocation_id is not None
    assert recorded[failed.invocation_id].outcome is ToolOutcome.FAILED
    assert "21610" in (recorded[failed.invocation_id].error or "")
    assert recorded[retried.invocation_id].outcome is ToolOutcome.SUCCEEDED
    assert [detail["outcome"] for detail in tool_events(env)] == ["failed", "succeeded"]


def test_a_failed_transfer_leaves_the_conversation_going(env: Env) -> None:
    sid = inbound_call(env)
    env.twilio.fail_next("update_call", status=404, code=20404, message="The requested resource was not found")

    failed = invoke("transfer_call", sid, {"to": "front_desk"})

    assert failed.outcome is ToolOutcome.FAILED
    assert failed.message == "The transfer did not go through."
    assert env.call(sid).conversation_ended is None
    assert invoke("transfer_call", sid, {"to": "front_desk"}).outcome is ToolOutcome.SUCCEEDED
    assert env.call(sid).conversation_ended == "transferred"


# -- what is not a tool call ----------------------------------------------------------------------------------


def test_a_tool_the_agent_does_not_have_is_refused_and_recorded(env: Env) -> None:
    sid = reminder_call(env)  # no transfer_call

    result = invoke("transfer_call", sid, {"to": "front_desk"})

    assert result.outcome is ToolOutcome.REFUSED
    assert result.message == "transfer_call is not available on this call."
    assert env.twilio.requests == []
    assert [tool.outcome for tool in env.timeline(sid).tools] == [ToolOutcome.REFUSED]


def test_an_unknown_call_is_404(env: Env) -> None:
    response = post("send_sms", random_call_sid(), {"body": "Hi"})

    assert response["statusCode"] == 404
    assert response_json(response)["message"] == "No record of this call"
    assert env.twilio.requests == []


def test_an_unknown_tool_is_404(env: Env) -> None:
    sid = inbound_call(env)

    response = post("wire_money", sid, {"amount": 1000})

    assert response["statusCode"] == 404
    assert "wire_money" in response_json(response)["message"]
    assert env.timeline(sid).tools == []


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"start": "next Tuesday", "name": "Jane"}, "'start' Value error, not an ISO 8601 date and time"),
        ({"start": "2030-01-01T10:00"}, "'name' is required"),
        ({"start": "2030-01-01T10:00", "name": ""}, "'name' String should have at least 1 character"),
        ({"start": "2030-01-01T10:00", "name": "J" * 81}, "'name' String should have at most 80 characters"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message_and_recorded(
    env: Env, arguments: dict[str, Any], problem: str
) -> None:
    sid = inbound_call(env)

    result = invoke("book_appointment", sid, arguments)

    assert result.outcome is ToolOutcome.REFUSED
    assert result.message.startswith("The book_appointment arguments were not accepted: ")
    assert problem in result.message
    assert result.message.endswith("It takes: start, name, reason.")
    [recorded] = env.timeline(sid).tools
    assert (recorded.outcome, recorded.arguments) == (ToolOutcome.REFUSED, arguments)
    assert env.appointments() == {}


def test_arguments_no_tool_takes_are_400(env: Env) -> None:
    sid = inbound_call(env)

    response = post("send_sms", sid, {"body": "x" * 5000})

    assert response["statusCode"] == 400
    assert "longer than" in response_json(response)["message"]
    assert env.twilio.requests == []


def test_a_request_without_an_iam_identity_is_403_before_anything_else(env: Env) -> None:
    sid = inbound_call(env)
    valid = event("send_sms", sid, {"body": "Hi"}, iam=False)
    malformed = {**event("send_sms", sid, {}, iam=False), "body": '{"call_sid": "not-a-sid"}'}

    for request in (valid, malformed):
        response = handler.lambda_handler(request, LambdaContext())
        assert response["statusCode"] == 403
        assert response_json(response)["message"] == "Forbidden: the request is not IAM-signed"

    assert env.twilio.requests == []
    assert env.timeline(sid).tools == []


def test_a_malformed_request_with_an_identity_is_422(env: Env) -> None:
    sid = inbound_call(env)
    malformed = {**event("send_sms", sid, {}), "body": '{"call_sid": "not-a-sid", "arguments": {}}'}

    response = handler.lambda_handler(malformed, LambdaContext())

    assert response["statusCode"] == 422
    assert response_json(response)["detail"][0]["loc"][-1] == "call_sid"


# -- rescheduling (the reminder agent) ------------------------------------------------------------------


def test_the_reminder_agent_moves_the_patients_appointment(env: Env) -> None:
    day = weekday_ahead(1)
    booked_by_phone = inbound_call(env, caller=PATIENT)
    assert invoke("book_appointment", booked_by_phone, booking(at(day, 10), "Pat Doe")).outcome is ToolOutcome.SUCCEEDED
    appointment_start = datetime.fromisoformat(at(day, 10)).replace(tzinfo=ZONE).isoformat()
    sid = reminder_call(env, appointment_start=appointment_start)
    later = weekday_ahead(3)

    moved = invoke("book_appointment", sid, booking(at(later, 14), "Pat Doe"))

    assert moved.outcome is ToolOutcome.SUCCEEDED
    assert moved.message == (
        f"The appointment is moved from {day:%A}, {day:%B} {day.day} at 10:00 AM "
        f"to {later:%A}, {later:%B} {later.day} at 2:00 PM."
    )
    assert moved.data is not None
    assert moved.data["moved_from"] == at(day, 10)
    slots = env.appointments()
    assert list(slots) == [utc_key(later, 14)]
    assert slots[utc_key(later, 14)]["customer_number"] == PATIENT

    # Moving again in the same call moves the appointment it now holds, not the one in the facts.
    again = invoke("book_appointment", sid, booking(at(later, 9), "Pat Doe"))

    assert again.outcome is ToolOutcome.SUCCEEDED
    assert again.data is not None
    assert again.data["moved_from"] == at(later, 14)
    assert list(env.appointments()) == [utc_key(later, 9)]


def test_the_reminder_agent_cannot_move_someone_elses_appointment(env: Env) -> None:
    day = weekday_ahead(1)
    patients_call = inbound_call(env, caller=PATIENT)
    assert invoke("book_appointment", patients_call, booking(at(day, 11))).outcome is ToolOutcome.SUCCEEDED
    appointment_start = datetime.fromisoformat(at(day, 11)).replace(tzinfo=ZONE).isoformat()
    # A reminder call that reached someone else, with the patient's appointment in its facts.
    sid = reminder_call(env, callee=STRANGER, appointment_start=appointment_start)

    result = invoke("book_appointment", sid, booking(at(weekday_ahead(2), 9), "Not Pat"))

    assert result.outcome is ToolOutcome.REFUSED
    assert result.message == (
        f"I could not find an appointment for this caller on {day:%A}, {day:%B} {day.day} at 11:00 AM, "
        "so I cannot move it."
    )
    slots = env.appointments()
    assert list(slots) == [utc_key(day, 11)]
    assert slots[utc_key(day, 11)]["customer_number"] == PATIENT


def test_rescheduling_into_a_taken_slot_keeps_the_old_appointment(env: Env) -> None:
    day = weekday_ahead(1)
    assert invoke("book_appointment", inbound_call(env, caller=PATIENT), booking(at(day, 9))).outcome is (
        ToolOutcome.SUCCEEDED
    )
    assert invoke("book_appointment", inbound_call(env, caller=STRANGER), booking(at(day, 13))).outcome is (
        ToolOutcome.SUCCEEDED
    )
    sid = reminder_call(env, appointment_start=datetime.fromisoformat(at(day, 9)).replace(tzinfo=ZONE).isoformat())

    result = invoke("book_appointment", sid, booking(at(day, 13), "Pat Doe"))

    assert result.outcome is ToolOutcome.REFUSED
    assert result.message.startswith("That time is already booked. Open slots nearby: ")
    slots = env.appointments()
    assert slots[utc_key(day, 9)]["customer_number"] == PATIENT
    assert slots[utc_key(day, 13)]["customer_number"] == STRANGER


def test_the_openapi_spec_describes_the_route(env: Env) -> None:
    spec = json.loads(handler.app.get_openapi_json_schema())
    operation = spec["paths"]["/tools/{name}"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ToolRequest")
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ToolResult")
    assert {"400", "403", "404", "409", "422", "503"} <= set(operation["responses"])
