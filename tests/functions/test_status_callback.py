"""functions/status_callback: status callbacks signed like Twilio signs them, into moto's DynamoDB, with
CallCompleted checked on moto's EventBridge through a rule that feeds an SQS queue."""

import importlib.util
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend

from functions.status_callback import handler
from switchboard.call import Call, CallDirection, CallStatus
from switchboard.observability import metrics
from switchboard.records import CallRecords, table_definition
from tests.support.apigw import LambdaContext, response_json, twilio_form_event
from tests.support.event_bus import PublishedEvents
from tests.support.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, random_call_sid

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_events.client import EventBridgeClient

REPO = Path(__file__).resolve().parents[2]
TABLE = "switchboard-calls"
BUS = "switchboard-calls"
PUBLIC_API_URL = "https://voice.example.com"
STATUS_URL = f"{PUBLIC_API_URL}/twilio/status"
CLINIC_NUMBER = "+15550100200"  # answered by agents/clinic-receptionist.yaml
REMINDER_NUMBER = "+15550100300"  # agents/appointment-reminder.yaml calls from it
CUSTOMER = "+15557654321"
T0 = datetime(2026, 11, 24, 11, 45, 0, tzinfo=UTC)


@dataclass
class Env:
    records: CallRecords
    dynamodb: "DynamoDBClient"
    events: "EventBridgeClient"
    bus: PublishedEvents

    def published(self) -> list[dict[str, Any]]:
        """Every event that reached the bus since the last look."""
        return self.bus.drain()

    def call_item(self, sid: str) -> dict[str, Any]:
        return self.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": f"CALL#{sid}"}, "sk": {"S": "CALL"}}).get(
            "Item", {}
        )

    def item_count(self) -> int:
        return int(self.dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"])


@pytest.fixture
def env(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(**table_definition(TABLE))
        secret = boto3.client("secretsmanager").create_secret(
            Name="switchboard/twilio", SecretString=json.dumps({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN})
        )["ARN"]
        events = boto3.client("events")
        events.create_event_bus(Name=BUS)
        env = Env(CallRecords(TABLE, dynamodb), dynamodb, events, PublishedEvents(BUS))
        for name, value in {
            "CALLS_TABLE": TABLE,
            "AGENTS_DIR": str(REPO / "agents"),
            "TWILIO_SECRET_ARN": secret,
            "PUBLIC_API_URL": PUBLIC_API_URL,
            "EVENT_BUS_NAME": BUS,
            "POWERTOOLS_TRACE_DISABLED": "true",
        }.items():
            monkeypatch.setenv(name, value)
        handler.dependencies.cache_clear()
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        yield env
        handler.dependencies.cache_clear()
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        metrics.clear_metrics()


# -- requests --------------------------------------------------------------------------------------------

SEQUENCE = {"initiated": 0, "ringing": 1, "in-progress": 2, "completed": 3, "busy": 3, "no-answer": 3}


def callback(
    sid: str,
    status: str,
    *,
    direction: str = "inbound",
    seconds: int | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The form of one status callback; its time is T0 plus `seconds` (default: the sequence number)."""
    inbound = direction == "inbound"
    sequence = SEQUENCE[status]
    at = T0.timestamp() + (sequence if seconds is None else seconds)
    form = {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": sid,
        "CallStatus": status,
        "CallbackSource": "call-progress-events",
        "Direction": direction,
        "From": CUSTOMER if inbound else REMINDER_NUMBER,
        "To": CLINIC_NUMBER if inbound else CUSTOMER,
        "SequenceNumber": str(sequence),
        "Timestamp": datetime.fromtimestamp(at, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
    }
    if status in {"completed", "busy", "no-answer"}:
        form["CallDuration"] = "42" if status == "completed" else "0"
    return {**form, **(extra or {})}


def event_for(params: dict[str, str], *, signature: str | None = None) -> dict[str, Any]:
    return twilio_form_event(
        "/twilio/status", params, auth_token=AUTH_TOKEN, public_url=STATUS_URL, signature=signature
    )


def post(params: dict[str, str], *, signature: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = handler.lambda_handler(event_for(params, signature=signature), LambdaContext())
    return response


def ok(response: dict[str, Any]) -> str:
    assert response["statusCode"] == 200, response["body"]
    return str(response_json(response)["outcome"])


def recorded_inbound_call(env: Env) -> str:
    sid = random_call_sid()
    env.records.create_call(
        Call(
            call_sid=sid,
            direction=CallDirection.INBOUND,
            from_number=CUSTOMER,
            to_number=CLINIC_NUMBER,
            agent_id="clinic-receptionist",
            created_at=T0,
        )
    )
    return sid


def completed_events(env: Env) -> list[dict[str, Any]]:
    published = env.published()
    assert all(event["detail-type"] == "CallCompleted" for event in published)
    return published


# -- ordering and duplicates ----------------------------------------------------------------------------------


def test_callbacks_in_order_build_the_record_and_publish_call_completed(env: Env) -> None:
    sid = recorded_inbound_call(env)
    outcomes = [ok(post(callback(sid, status))) for status in ("initiated", "ringing", "in-progress")]
    assert outcomes == ["applied"] * 3
    assert env.published() == []
    assert ok(post(callback(sid, "completed", extra={"AnsweredBy": "human"}))) == "applied"
    call = env.records.get_call(sid)
    assert call is not None
    assert call.status is CallStatus.COMPLETED
    assert call.answered_at == datetime.fromtimestamp(T0.timestamp() + 2, UTC)
    assert call.ended_at == datetime.fromtimestamp(T0.timestamp() + 3, UTC)
    assert call.duration_s == 42
    assert [event.sequence_number for event in call.status_history] == [0, 1, 2, 3]
    [completed] = completed_events(env)
    assert completed["source"] == "switchboard"
    assert completed["detail"] == {
        "call_sid": sid,
        "agent_id": "clinic-receptionist",
        "at": completed["detail"]["at"],
        "status": "completed",
        "direction": "inbound",
        "duration_s": 42,
        "answered_by": "human",
        "attempt": 1,
    }


def test_out_of_order_and_duplicated_callbacks_give_the_same_record_and_one_event(env: Env) -> None:
    in_order = recorded_inbound_call(env)
    for status in ("initiated", "ringing", "in-progress", "completed"):
        ok(post(callback(in_order, status)))
    scrambled = recorded_inbound_call(env)
    # completed first, then the rest backwards, with every callback delivered twice.
    for status in ("completed", "completed", "ringing", "in-progress", "ringing", "initiated", "in-progress"):
        ok(post(callback(scrambled, status)))
    expected = env.records.get_call(in_order)
    got = env.records.get_call(scrambled)
    assert expected is not None
    assert got is not None
    assert got.model_dump(exclude={"call_sid"}) == expected.model_dump(exclude={"call_sid"})
    assert got.status is CallStatus.COMPLETED
    assert sorted(event["detail"]["call_sid"] for event in completed_events(env)) == sorted([in_order, scrambled])


def test_a_late_ringing_does_not_reopen_a_completed_call(env: Env) -> None:
    sid = recorded_inbound_call(env)
    ok(post(callback(sid, "completed")))
    assert ok(post(callback(sid, "ringing"))) == "applied"  # recorded in the history, status untouched
    call = env.records.get_call(sid)
    assert call is not None
    assert call.status is CallStatus.COMPLETED
    assert len(completed_events(env)) == 1


def test_a_duplicate_final_callback_publishes_nothing_more(env: Env) -> None:
    sid = recorded_inbound_call(env)
    assert ok(post(callback(sid, "completed"))) == "applied"
    assert ok(post(callback(sid, "completed"))) == "replay"
    assert len(completed_events(env)) == 1


def _separate_container(name: str) -> ModuleType:
    """A fresh copy of the handler module: what another Lambda execution environment would run."""
    spec = importlib.util.spec_from_file_location(name, Path(handler.__file__))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    # DynamoDB checks a condition and writes atomically; moto checks then writes in plain Python, so
    # under threads it could let two conditional writes through. One lock restores DynamoDB's guarantee.
    lock = threading.RLock()
    for name in ("put_item", "update_item"):
        original: Callable[..., Any] = getattr(DynamoDBBackend, name)

        def atomic(self: DynamoDBBackend, *args: Any, __original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, atomic)


@pytest.mark.usefixtures("atomic_moto")
def test_concurrent_deliveries_of_the_final_callback_publish_call_completed_once(env: Env) -> None:
    sid = recorded_inbound_call(env)
    ok(post(callback(sid, "in-progress")))
    containers = [_separate_container(f"status_callback_container_{n}") for n in range(8)]
    for container in containers:
        container.dependencies()  # cold starts, one after the other: boto3 builds clients unsafely in threads
    final = event_for(callback(sid, "completed"))
    barrier = threading.Barrier(len(containers))

    def deliver(container: ModuleType) -> str:
        barrier.wait()
        return ok(container.app.resolve(dict(final), LambdaContext()))

    with ThreadPoolExecutor(max_workers=len(containers)) as pool:
        outcomes = list(pool.map(deliver, containers))
    assert set(outcomes) <= {"applied", "replay"}
    assert "applied" in outcomes
    [completed] = completed_events(env)
    assert completed["detail"]["call_sid"] == sid
    assert env.call_item(sid)["event_CallCompleted"]["M"]["published_at"]["S"]


def test_a_failed_publish_is_answered_500_and_a_redelivery_publishes_once(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    late_bus = "switchboard-late-bus"
    monkeypatch.setenv("EVENT_BUS_NAME", late_bus)  # does not exist yet: put_events fails
    handler.dependencies.cache_clear()
    sid = recorded_inbound_call(env)
    final = callback(sid, "completed")
    failed = post(final)
    assert failed["statusCode"] == 500
    assert "deliver again" in failed["body"]
    call = env.records.get_call(sid)
    assert call is not None
    assert call.status is CallStatus.COMPLETED  # the status is recorded all the same
    assert "event_CallCompleted" not in env.call_item(sid)  # the claim was released

    env.events.create_event_bus(Name=late_bus)
    env.bus.route(late_bus)
    assert ok(post(final)) == "replay"
    assert ok(post(final)) == "replay"
    [completed] = completed_events(env)
    assert completed["detail"]["call_sid"] == sid


# -- what a callback carries ------------------------------------------------------------------------------------


def test_price_and_answered_by_are_stored(env: Env) -> None:
    sid = recorded_inbound_call(env)
    ok(post(callback(sid, "completed", extra={"Price": "-0.0085", "PriceUnit": "USD", "AnsweredBy": "human"})))
    call = env.records.get_call(sid)
    assert call is not None
    [event] = call.status_history
    assert (event.price, event.price_unit, event.answered_by) == ("-0.0085", "USD", "human")
    assert call.answered_by == "human"


def test_blank_optional_fields_are_absent(env: Env) -> None:
    sid = recorded_inbound_call(env)
    ok(post(callback(sid, "ringing", extra={"AnsweredBy": "", "CallDuration": ""})))
    call = env.records.get_call(sid)
    assert call is not None
    [event] = call.status_history
    assert (event.answered_by, event.duration_s) == (None, None)


def test_a_malformed_callback_is_refused_with_422_and_nothing_written(env: Env) -> None:
    sid = recorded_inbound_call(env)
    response = post(callback(sid, "completed", extra={"Timestamp": "yesterday"}))
    assert response["statusCode"] == 422
    response = post(callback(sid, "completed", extra={"CallStatus": "exploded"}))
    assert response["statusCode"] == 422
    call = env.records.get_call(sid)
    assert call is not None
    assert call.status_history == []


# -- calls with no record --------------------------------------------------------------------------------------


def test_an_unrecorded_inbound_call_is_recorded_from_its_callback(env: Env) -> None:
    sid = random_call_sid()
    assert ok(post(callback(sid, "ringing"))) == "applied"
    call = env.records.get_call(sid)
    assert call is not None
    assert (call.direction, call.from_number, call.to_number, call.agent_id) == (
        CallDirection.INBOUND,
        CUSTOMER,
        CLINIC_NUMBER,
        "clinic-receptionist",
    )
    assert call.status is CallStatus.RINGING


def test_an_outbound_callback_before_the_dialers_record_waits_for_it(env: Env) -> None:
    sid = random_call_sid()
    assert ok(post(callback(sid, "initiated", direction="outbound-api"))) == "stored_before_call"
    assert env.records.get_call(sid) is None  # the dialer's record, with its facts, is still to come
    dialed = Call(
        call_sid=sid,
        direction=CallDirection.OUTBOUND,
        from_number=REMINDER_NUMBER,
        to_number=CUSTOMER,
        agent_id="appointment-reminder",
        created_at=T0,
        attempt=2,
        facts={"patient_name": "Ada"},
    )
    assert env.records.create_call(dialed) is True
    for status in ("ringing", "in-progress", "completed"):
        ok(post(callback(sid, status, direction="outbound-api")))
    call = env.records.get_call(sid)
    assert call is not None
    assert [event.status for event in call.status_history] == [
        CallStatus.INITIATED,
        CallStatus.RINGING,
        CallStatus.IN_PROGRESS,
        CallStatus.COMPLETED,
    ]
    assert call.facts == {"patient_name": "Ada"}
    [completed] = completed_events(env)
    assert completed["detail"]["attempt"] == 2
    assert completed["detail"]["direction"] == "outbound"


def test_an_outbound_call_whose_record_was_lost_is_recorded_at_its_final_callback(env: Env) -> None:
    sid = random_call_sid()
    ok(post(callback(sid, "initiated", direction="outbound-api")))
    assert ok(post(callback(sid, "busy", direction="outbound-api"))) == "applied"
    call = env.records.get_call(sid)
    assert call is not None
    assert (call.direction, call.agent_id, call.from_number, call.to_number, call.status) == (
        CallDirection.OUTBOUND,
        "appointment-reminder",
        REMINDER_NUMBER,
        CUSTOMER,
        CallStatus.BUSY,
    )
    assert [event.status for event in call.status_history] == [CallStatus.INITIATED, CallStatus.BUSY]
    [completed] = completed_events(env)
    assert (completed["detail"]["status"], completed["detail"]["duration_s"]) == ("busy", 0)


def test_a_callback_whose_agent_cannot_be_told_is_stored_alone_and_acknowledged(env: Env) -> None:
    sid = random_call_sid()
    unknown_number = {"To": "+15550100999"}
    assert ok(post(callback(sid, "completed", extra=unknown_number))) == "no_agent"
    assert env.records.get_call(sid) is None
    assert env.item_count() == 1  # the status event, kept for whoever records the call later
    assert env.published() == []


# -- forged requests -----------------------------------------------------------------------------------------------


def test_forged_and_unsigned_callbacks_are_refused_and_write_nothing(env: Env) -> None:
    sid = recorded_inbound_call(env)
    for signature in ("Zm9yZ2Vk", ""):
        response = post(callback(sid, "completed"), signature=signature)
        assert response["statusCode"] == 403
        assert response["multiValueHeaders"]["Content-Type"] == ["text/plain"]
    # Signed over the URL the Lambda sees (API Gateway's own host) instead of the public one.
    spoofed = twilio_form_event(
        "/twilio/status",
        callback(sid, "completed"),
        auth_token=AUTH_TOKEN,
        public_url="https://1234567890.execute-api.us-east-1.amazonaws.com/prod/twilio/status",
    )
    assert handler.lambda_handler(spoofed, LambdaContext())["statusCode"] == 403
    call = env.records.get_call(sid)
    assert call is not None
    assert call.status_history == []
    assert env.item_count() == 1
    assert env.published() == []


def test_the_openapi_spec_describes_the_status_callback() -> None:
    spec = handler.app.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
    operation = spec["paths"]["/twilio/status"]["post"]
    assert "application/x-www-form-urlencoded" in operation["requestBody"]["content"]
    assert {"403", "500", "200"} <= set(operation["responses"])
    properties = spec["components"]["schemas"]["StatusCallback"]["properties"]
    assert {"CallSid", "CallStatus", "SequenceNumber", "Timestamp", "Price"} <= set(properties)
