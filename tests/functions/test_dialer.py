"""functions/dialer through its Lambda entry point: API Gateway events with an IAM identity, Scheduler
payloads and CallCompleted events, on moto (DynamoDB, Scheduler, Secrets Manager) and the local Twilio stub.

The real clock runs here, so calling hours are chosen to make each test's outcome independent of when it
runs: an always-open agent dials a number whose zone is not in its last minute of the day, and a
closed agent's window is placed hours away from the current time in New York. Fixed instants are
tested in tests/integration/test_dialing.py, where the clock is a parameter.
"""

import json
import threading
import time as time_module
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend
from pydantic import ValidationError

from functions.dialer import handler
from switchboard.dialing import Pacer, deferral_name
from switchboard.observability import metrics
from switchboard.outbound import DoNotCallList, do_not_call_table_definition
from switchboard.records import CallRecords, table_definition
from switchboard.schedules import SCHEDULED_TIME_PLACEHOLDER
from tests.support.apigw import LambdaContext, json_event, response_json, rest_event
from tests.support.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, TwilioStub, random_call_sid

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_scheduler.client import EventBridgeSchedulerClient

TABLE = "switchboard-calls"
DNC_TABLE = "switchboard-dnc"
GROUP = "switchboard-dials"
DIALER_ARN = "arn:aws:lambda:us-east-1:123456789012:function:switchboard-dialer"
ROLE_ARN = "arn:aws:iam::123456789012:role/switchboard-scheduler"
DLQ_ARN = "arn:aws:sqs:us-east-1:123456789012:switchboard-dial-dlq"
PUBLIC_API_URL = "https://voice.example.com/prod"
CALLER_ARN = "arn:aws:iam::123456789012:user/crm"

ALWAYS_OPEN = "reminder"  # calling hours 00:00-23:59
CLOSED_NOW = "closed-now"  # calling hours placed hours away from now in New York
INBOUND_ONLY = "receptionist"
REMINDER_FROM = "+15550100300"
CLOSED_FROM = "+15550100301"

NEW_YORK = "+12125550123"
HONOLULU = "+18085550123"
TORONTO = "+16135550123"
LONDON = "+442071838750"
NY = ZoneInfo("America/New_York")


def open_number() -> str:
    """A callee inside 00:00-23:59 now and for the next hour: New York, or Honolulu during New York's 23:00s."""
    return HONOLULU if datetime.now(NY).hour == 23 else NEW_YORK


def closed_window(now_ny: datetime) -> tuple[time, time]:
    """One hour of calling, at least an hour away from now in New York, inside today's date."""
    hour = now_ny.hour
    if hour < 12:
        return time(hour + 2), time(hour + 3)
    return time(hour - 3), time(hour - 2)


def next_opening(now_ny: datetime, opening: time) -> datetime:
    day: date = now_ny.date() if opening > now_ny.time() else now_ny.date() + timedelta(days=1)
    return datetime.combine(day, opening, tzinfo=NY)


AGENT_TEMPLATE = """
id: {id}
name: {id}
directions: [outbound]
voice: {{id: Matthew}}
greeting: Hello, this is the clinic.
system_prompt: Remind the patient of the appointment.
outbound:
  from_number: "{from_number}"
  allowed_countries: [US, CA]
  calling_hours: {{open: "{open}", close: "{close}"}}
  max_attempts: 3
  retry_after_minutes: 90
  retry_on: [busy, no-answer]
"""

INBOUND_AGENT = """
id: receptionist
name: Receptionist
directions: [inbound]
voice: {id: Joanna}
greeting: Hello.
system_prompt: Answer.
phone_numbers: ["+15550100200"]
"""


@dataclass
class Env:
    dynamodb: "DynamoDBClient"
    scheduler: "EventBridgeSchedulerClient"
    stub: TwilioStub
    records: CallRecords
    closed_hours: tuple[time, time]
    now_ny: datetime

    def intent(self, dial_id: str) -> dict[str, Any]:
        item = self.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": f"DIAL#{dial_id}"}, "sk": {"S": "DIAL"}})
        return {key: next(iter(value.values())) for key, value in item.get("Item", {}).items()}

    def items(self, prefix: str) -> list[dict[str, Any]]:
        return [item for item in self.dynamodb.scan(TableName=TABLE)["Items"] if item["pk"]["S"].startswith(prefix)]

    def schedule(self, name: str) -> dict[str, Any]:
        return dict(self.scheduler.get_schedule(Name=name, GroupName=GROUP))

    def schedule_names(self) -> list[str]:
        return sorted(entry["Name"] for entry in self.scheduler.list_schedules(GroupName=GROUP)["Schedules"])


@pytest.fixture
def env(aws_env: None, twilio_stub: TwilioStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    now_ny = datetime.now(NY)
    closed = closed_window(now_ny)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / f"{ALWAYS_OPEN}.yaml").write_text(
        AGENT_TEMPLATE.format(id=ALWAYS_OPEN, from_number=REMINDER_FROM, open="00:00", close="23:59")
    )
    (agents / f"{CLOSED_NOW}.yaml").write_text(
        AGENT_TEMPLATE.format(
            id=CLOSED_NOW, from_number=CLOSED_FROM, open=f"{closed[0]:%H:%M}", close=f"{closed[1]:%H:%M}"
        )
    )
    (agents / f"{INBOUND_ONLY}.yaml").write_text(INBOUND_AGENT)
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(**table_definition(TABLE))
        dynamodb.create_table(**do_not_call_table_definition(DNC_TABLE))
        scheduler = boto3.client("scheduler")
        scheduler.create_schedule_group(Name=GROUP)
        secret = boto3.client("secretsmanager").create_secret(
            Name="switchboard/twilio", SecretString=json.dumps({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN})
        )["ARN"]
        for name, value in {
            "CALLS_TABLE": TABLE,
            "DO_NOT_CALL_TABLE": DNC_TABLE,
            "AGENTS_DIR": str(agents),
            "TWILIO_SECRET_ARN": secret,
            "TWILIO_API_BASE_URL": twilio_stub.url,
            "PUBLIC_API_URL": PUBLIC_API_URL,
            "SCHEDULE_GROUP": GROUP,
            "SCHEDULER_ROLE_ARN": ROLE_ARN,
            "DIALER_FUNCTION_ARN": DIALER_ARN,
            "SCHEDULE_DEAD_LETTER_ARN": DLQ_ARN,
            "POWERTOOLS_TRACE_DISABLED": "true",
        }.items():
            monkeypatch.setenv(name, value)
        handler.dependencies.cache_clear()
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        yield Env(dynamodb, scheduler, twilio_stub, CallRecords(TABLE, dynamodb), closed, now_ny)
        handler.dependencies.cache_clear()
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        metrics.clear_metrics()


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB checks a condition and writes atomically; moto does it in plain Python, so under threads two
    conditional puts could both pass. One lock around moto's writes restores DynamoDB's guarantee."""
    lock = threading.RLock()
    for name in ("put_item", "update_item"):
        original: Callable[..., Any] = getattr(DynamoDBBackend, name)

        def atomic(self: DynamoDBBackend, *args: Any, __original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, atomic)


# -- requests --------------------------------------------------------------------------------------------


def invoke(event: Any) -> dict[str, Any]:
    result: dict[str, Any] = handler.lambda_handler(event, LambdaContext())
    return result


def post(path: str, payload: Any, *, iam: bool = True) -> dict[str, Any]:
    return invoke(json_event("POST", path, payload, iam_user_arn=CALLER_ARN if iam else None))


def get_call(sid: str, *, iam: bool = True) -> dict[str, Any]:
    event = rest_event(
        "GET",
        f"/calls/{sid}",
        resource="/calls/{sid}",
        path_parameters={"sid": sid},
        iam_user_arn=CALLER_ARN if iam else None,
    )
    return invoke(event)


def dial_body(**fields: Any) -> dict[str, Any]:
    return {"agent_id": ALWAYS_OPEN, "to": open_number(), **fields}


def call_completed(sid: str, status: str, *, attempt: int, agent_id: str = ALWAYS_OPEN) -> dict[str, Any]:
    """A CallCompleted event as the EventBridge rule delivers it (detail as switchboard.events writes it)."""
    return {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "CallCompleted",
        "source": "switchboard",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "call_sid": sid,
            "agent_id": agent_id,
            "at": datetime.now(UTC).isoformat(),
            "status": status,
            "direction": "outbound",
            "duration_s": 0,
            "answered_by": None,
            "attempt": attempt,
        },
    }


def as_scheduler_delivers(schedule: dict[str, Any], fired_at: str = "2026-03-02T15:00:00Z") -> Any:
    """The schedule's Input as Scheduler hands it to the function: context attributes filled in."""
    return json.loads(schedule["Target"]["Input"].replace(SCHEDULED_TIME_PLACEHOLDER, fired_at))


# -- POST /calls -----------------------------------------------------------------------------------------


def test_a_call_is_dialed_with_the_contract_arguments_and_recorded(env: Env) -> None:
    callee = open_number()
    facts = {"patient_name": "Ada Lovelace", "appointment_start": "2026-03-03T10:30:00-05:00"}
    response = post("/calls", dial_body(to=callee, facts=facts, dial_id="crm-42"))
    assert response["statusCode"] == 201, response["body"]
    body = response_json(response)
    assert (body["dial_id"], body["status"], body["agent_id"], body["attempt"], body["replayed"]) == (
        "crm-42",
        "dialed",
        ALWAYS_OPEN,
        1,
        False,
    )
    [create] = env.stub.of("create_call")
    assert create.params == {
        "To": [callee],
        "From": [REMINDER_FROM],
        "Url": [f"{PUBLIC_API_URL}/twilio/voice?agent_id={ALWAYS_OPEN}"],
        "StatusCallback": [f"{PUBLIC_API_URL}/twilio/status"],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        "StatusCallbackMethod": ["POST"],
        "MachineDetection": ["DetectMessageEnd"],
        "AsyncAmd": ["true"],
        "AsyncAmdStatusCallback": [f"{PUBLIC_API_URL}/twilio/amd"],
        "AsyncAmdStatusCallbackMethod": ["POST"],
    }
    call = env.records.get_call(body["call_sid"])
    assert call is not None
    assert (call.direction.value, call.from_number, call.to_number, call.agent_id, call.attempt, call.facts) == (
        "outbound",
        REMINDER_FROM,
        callee,
        ALWAYS_OPEN,
        1,
        facts,
    )
    intent = env.intent("crm-42")
    assert (intent["status"], intent["call_sid"], intent["source"]) == ("dialed", body["call_sid"], "api")


def test_a_repeated_dial_id_answers_the_same_call_without_dialing_again(env: Env) -> None:
    first = response_json(post("/calls", dial_body(dial_id="once")))
    again = post("/calls", dial_body(dial_id="once"))
    assert again["statusCode"] == 200
    assert response_json(again) == {**first, "replayed": True}
    assert len(env.stub.of("create_call")) == 1
    other = post("/calls", dial_body(dial_id="once", facts={"patient_name": "Someone else"}))
    assert other["statusCode"] == 409
    assert response_json(other)["error"] == "dial_id_conflict"


def test_a_dial_without_dial_id_gets_one(env: Env) -> None:
    body = response_json(post("/calls", dial_body()))
    assert len(body["dial_id"]) == 32
    assert env.intent(body["dial_id"])["status"] == "dialed"


@pytest.mark.parametrize("to", ["2125550123", "+1 212 555 0123", "+0123456789", ""])
def test_a_number_not_in_e164_is_422_and_nothing_is_written(env: Env, to: str) -> None:
    response = post("/calls", dial_body(to=to))
    assert response["statusCode"] == 422
    assert response_json(response)["detail"][0]["loc"] == ["body", "to"]
    assert env.dynamodb.scan(TableName=TABLE)["Items"] == []
    assert env.stub.requests == []


def test_an_e164_shaped_number_that_is_not_valid_is_refused_and_recorded(env: Env) -> None:
    response = post("/calls", dial_body(to="+15550100399", dial_id="fiction"))
    assert response["statusCode"] == 422
    assert response_json(response)["error"] == "invalid_number"
    assert env.intent("fiction")["status"] == "refused"
    assert env.stub.requests == []


def test_a_country_the_agent_may_not_call_is_403(env: Env) -> None:
    response = post("/calls", dial_body(to=LONDON, dial_id="abroad"))
    assert response["statusCode"] == 403
    body = response_json(response)
    assert body["error"] == "country_not_allowed"
    assert "GB" in body["message"]
    assert env.intent("abroad")["reason"] == "country_not_allowed"
    assert env.stub.requests == []


def test_a_number_on_the_do_not_call_list_is_not_dialed_and_the_refusal_is_recorded(env: Env) -> None:
    callee = open_number()
    DoNotCallList(DNC_TABLE, env.dynamodb).add(callee, reason="asked not to be called")
    response = post("/calls", dial_body(to=callee, dial_id="dnc"))
    assert response["statusCode"] == 403
    assert response_json(response)["error"] == "do_not_call"
    intent = env.intent("dnc")
    assert (intent["status"], intent["reason"]) == ("refused", "do_not_call")
    assert env.stub.requests == []
    assert env.items("CALL#") == []
    assert env.items("PACE#") == []


def test_outside_calling_hours_is_409_with_the_next_allowed_moment(env: Env) -> None:
    response = post("/calls", {"agent_id": CLOSED_NOW, "to": NEW_YORK, "dial_id": "too-early-or-late"})
    assert response["statusCode"] == 409
    body = response_json(response)
    assert body["error"] == "outside_calling_hours"
    expected = next_opening(env.now_ny, env.closed_hours[0])
    assert datetime.fromisoformat(body["next_allowed_at"]) == expected
    intent = env.intent("too-early-or-late")
    assert (intent["status"], intent["reason"]) == ("refused", "outside_calling_hours")
    assert env.stub.requests == []


def test_an_unknown_agent_is_404_and_an_inbound_one_422(env: Env) -> None:
    unknown = post("/calls", dial_body(agent_id="nobody"))
    assert (unknown["statusCode"], response_json(unknown)["error"]) == (404, "unknown_agent")
    inbound = post("/calls", dial_body(agent_id=INBOUND_ONLY))
    assert (inbound["statusCode"], response_json(inbound)["error"]) == (422, "not_an_outbound_agent")
    assert env.stub.requests == []


def test_a_twilio_error_is_502_with_its_code_and_nothing_is_lost(env: Env) -> None:
    env.stub.fail_next("create_call", status=400, code=21215, message="Geographic permission not enabled")
    response = post("/calls", dial_body(dial_id="geo", facts={"patient_name": "Ada"}))
    assert response["statusCode"] == 502
    body = response_json(response)
    assert (body["error"], body["twilio_code"], body["dial_id"]) == ("twilio_error", 21215, "geo")
    intent = env.intent("geo")
    assert (intent["status"], intent["twilio_code"], intent["twilio_status"]) == ("failed", "21215", "400")
    assert intent["facts"] == {"patient_name": {"S": "Ada"}}
    assert "call_sid" not in intent
    assert env.items("CALL#") == []
    # The dial id names a failed dial now: repeating it reports the failure, it does not dial again.
    assert post("/calls", dial_body(dial_id="geo", facts={"patient_name": "Ada"}))["statusCode"] == 502
    assert len(env.stub.of("create_call")) == 1


@pytest.mark.usefixtures("atomic_moto")
def test_concurrent_dials_from_one_number_get_different_seconds(env: Env) -> None:
    handler.dependencies()  # the cold start, once: boto3 builds clients unsafely in threads
    barrier = threading.Barrier(2)

    def dial(n: int) -> dict[str, Any]:
        barrier.wait()
        return post("/calls", dial_body(dial_id=f"burst-{n}"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(dial, range(2)))
    assert [response["statusCode"] for response in responses] == [201, 201]
    slots = {item["dial_id"]["S"]: int(item["second"]["N"]) for item in env.items(f"PACE#{REMINDER_FROM}")}
    assert set(slots) == {"burst-0", "burst-1"}
    assert slots["burst-0"] != slots["burst-1"]
    for n in range(2):
        assert int(env.intent(f"burst-{n}")["pacing_second"]) == slots[f"burst-{n}"]
    assert len(env.stub.of("create_call")) == 2


def test_no_free_second_is_503_and_leaves_the_dial_received_for_a_retry(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIAL_PACING_MAX_WAIT_S", "0")
    handler.dependencies.cache_clear()
    # Every second of the next minute is taken by other dials from this number.
    start = int(time_module.time())
    for second in range(start, start + 60):
        Pacer(TABLE, env.dynamodb, max_wait_s=0, clock=float(second).__float__).acquire(REMINDER_FROM, "other")
    response = post("/calls", dial_body(dial_id="crowded"))
    assert response["statusCode"] == 503
    assert response["multiValueHeaders"]["Retry-After"] == ["1"]
    assert response_json(response)["error"] == "rate_limited"
    assert env.intent("crowded")["status"] == "received"
    assert env.stub.requests == []


# -- IAM -------------------------------------------------------------------------------------------------


def test_a_request_without_an_iam_identity_is_403_before_anything_runs(env: Env) -> None:
    for response in (
        post("/calls", dial_body(), iam=False),
        post("/calls", {"not": "even valid"}, iam=False),
        post("/schedules", {"agent_id": ALWAYS_OPEN}, iam=False),
        get_call(random_call_sid(), iam=False),
    ):
        assert response["statusCode"] == 403
        assert response_json(response)["error"] == "forbidden"
    assert env.dynamodb.scan(TableName=TABLE)["Items"] == []
    assert env.stub.requests == []


def test_an_identity_with_a_caller_but_no_user_arn_is_refused(env: Env) -> None:
    event = json_event("POST", "/calls", dial_body(), iam_user_arn=CALLER_ARN)
    event["requestContext"]["identity"]["userArn"] = None
    assert invoke(event)["statusCode"] == 403


# -- GET /calls/{sid} ------------------------------------------------------------------------------------


def test_get_call_returns_the_record_and_its_timeline(env: Env) -> None:
    sid = response_json(post("/calls", dial_body(facts={"patient_name": "Ada"})))["call_sid"]
    response = get_call(sid)
    assert response["statusCode"] == 200
    timeline = response_json(response)
    assert timeline["call"]["call_sid"] == sid
    assert timeline["call"]["facts"] == {"patient_name": "Ada"}
    assert timeline["call"]["direction"] == "outbound"
    assert (timeline["turns"], timeline["tools"]) == ([], [])


def test_get_call_of_an_unknown_call_is_404_and_a_malformed_sid_422(env: Env) -> None:
    missing = get_call(random_call_sid())
    assert (missing["statusCode"], response_json(missing)["error"]) == (404, "call_not_found")
    assert get_call("CA-not-a-sid")["statusCode"] == 422


# -- POST /schedules -------------------------------------------------------------------------------------


def test_a_one_time_schedule_targets_this_function_with_the_dial_payload(env: Env) -> None:
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    response = post(
        "/schedules",
        {
            "agent_id": ALWAYS_OPEN,
            "to": [NEW_YORK],
            "facts": {"patient_name": "Ada"},
            "at": at.isoformat(),
            "timezone": "America/New_York",
            "name": "ada-reminder",
        },
    )
    assert response["statusCode"] == 201, response["body"]
    local = at.astimezone(NY)
    assert response_json(response) == {
        "schedule_name": "ada-reminder",
        "schedule_arn": f"arn:aws:scheduler:us-east-1:123456789012:schedule/{GROUP}/ada-reminder",
        "group": GROUP,
        "expression": f"at({local:%Y-%m-%dT%H:%M:%S})",
        "timezone": "America/New_York",
        "one_time": True,
        "numbers": 1,
    }
    schedule = env.schedule("ada-reminder")
    assert (schedule["GroupName"], schedule["ScheduleExpression"], schedule["ScheduleExpressionTimezone"]) == (
        GROUP,
        f"at({local:%Y-%m-%dT%H:%M:%S})",
        "America/New_York",
    )
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = schedule["Target"]
    assert (target["Arn"], target["RoleArn"], target["DeadLetterConfig"]) == (DIALER_ARN, ROLE_ARN, {"Arn": DLQ_ARN})
    assert json.loads(target["Input"]) == {
        "agent_id": ALWAYS_OPEN,
        "to": NEW_YORK,
        "facts": {"patient_name": "Ada"},
        "attempt": 1,
        "dial_id": "ada-reminder.0",
        "scheduled_time": SCHEDULED_TIME_PLACEHOLDER,
    }


def test_a_cron_campaign_dials_a_list(env: Env) -> None:
    response = post(
        "/schedules",
        {
            "agent_id": ALWAYS_OPEN,
            "to": [NEW_YORK, TORONTO],
            "cron": "cron(0 10 ? * MON-FRI *)",
            "timezone": "America/Toronto",
        },
    )
    assert response["statusCode"] == 201, response["body"]
    body = response_json(response)
    assert (body["one_time"], body["numbers"], body["expression"]) == (False, 2, "cron(0 10 ? * MON-FRI *)")
    assert body["schedule_name"].startswith("dial-")
    schedule = env.schedule(body["schedule_name"])
    assert schedule["ScheduleExpression"] == "cron(0 10 ? * MON-FRI *)"
    assert schedule["ScheduleExpressionTimezone"] == "America/Toronto"
    assert schedule.get("ActionAfterCompletion") in (None, "NONE")  # recurring: it stays
    payload = json.loads(schedule["Target"]["Input"])
    assert [entry["to"] for entry in payload] == [NEW_YORK, TORONTO]
    assert [entry["dial_id"] for entry in payload] == [f"{body['schedule_name']}.0", f"{body['schedule_name']}.1"]


def test_a_schedule_with_numbers_its_agent_cannot_call_is_refused_whole(env: Env) -> None:
    DoNotCallList(DNC_TABLE, env.dynamodb).add(TORONTO, reason="opted out")
    response = post(
        "/schedules",
        {"agent_id": ALWAYS_OPEN, "to": [NEW_YORK, LONDON, TORONTO], "cron": "cron(0 10 ? * MON *)"},
    )
    assert response["statusCode"] == 422
    body = response_json(response)
    assert body["error"] == "numbers_refused"
    assert [(entry["index"], entry["reason"]) for entry in body["refused"]] == [
        (1, "country_not_allowed"),
        (2, "do_not_call"),
    ]
    assert env.schedule_names() == []


def test_a_schedule_name_in_use_is_409_and_bad_requests_422(env: Env) -> None:
    request = {"agent_id": ALWAYS_OPEN, "to": [NEW_YORK], "cron": "cron(0 10 ? * MON *)", "name": "weekly"}
    assert post("/schedules", request)["statusCode"] == 201
    again = post("/schedules", request)
    assert (again["statusCode"], response_json(again)["error"]) == (409, "schedule_exists")
    past = post("/schedules", {"agent_id": ALWAYS_OPEN, "to": [NEW_YORK], "at": "2020-01-01T10:00:00+00:00"})
    assert past["statusCode"] == 422
    both = post(
        "/schedules",
        {"agent_id": ALWAYS_OPEN, "to": [NEW_YORK], "cron": "cron(0 10 ? * MON *)", "at": "2099-01-01T10:00:00Z"},
    )
    assert both["statusCode"] == 422
    unknown = post("/schedules", {"agent_id": "nobody", "to": [NEW_YORK], "cron": "cron(0 10 ? * MON *)"})
    assert (unknown["statusCode"], response_json(unknown)["error"]) == (404, "unknown_agent")
    assert env.schedule_names() == ["weekly"]


# -- Scheduler deliveries --------------------------------------------------------------------------------


def test_a_scheduler_delivery_dials_every_number_once(env: Env) -> None:
    numbers = [open_number(), TORONTO] if open_number() == NEW_YORK else [open_number()]
    response = post(
        "/schedules",
        {"agent_id": ALWAYS_OPEN, "to": numbers, "facts": {"clinic": "Maple"}, "cron": "cron(0 10 ? * MON *)"},
    )
    schedule = env.schedule(response_json(response)["schedule_name"])
    delivery = as_scheduler_delivers(schedule)
    result = invoke(delivery)
    assert [entry["status"] for entry in result["dials"]] == ["dialed"] * len(numbers)
    assert [request.param("To") for request in env.stub.of("create_call")] == numbers
    for entry in result["dials"]:
        call = env.records.get_call(entry["call_sid"])
        assert call is not None
        assert call.facts == {"clinic": "Maple"}
        assert env.intent(entry["dial_id"])["source"] == "schedule"
    # Scheduler delivers at least once: the same firing again dials nobody.
    again = invoke(as_scheduler_delivers(schedule))
    assert [entry["status"] for entry in again["dials"]] == ["dialed"] * len(numbers)
    assert len(env.stub.of("create_call")) == len(numbers)
    # The next firing is a dial of its own.
    invoke(as_scheduler_delivers(schedule, fired_at="2026-03-09T15:00:00Z"))
    assert len(env.stub.of("create_call")) == 2 * len(numbers)


def test_a_single_dial_payload_is_dialed(env: Env) -> None:
    result = invoke({"agent_id": ALWAYS_OPEN, "to": open_number(), "dial_id": "by-hand", "attempt": 2})
    [entry] = result["dials"]
    assert (entry["dial_id"], entry["status"]) == ("by-hand", "dialed")
    call = env.records.get_call(entry["call_sid"])
    assert call is not None
    assert call.attempt == 2


def test_a_scheduled_dial_outside_calling_hours_is_deferred_not_dropped(env: Env) -> None:
    payload = {"agent_id": CLOSED_NOW, "to": NEW_YORK, "facts": {"patient_name": "Ada"}, "dial_id": "camp.0"}
    [entry] = invoke(payload)["dials"]
    assert entry["status"] == "deferred"
    name = deferral_name("camp.0")
    intent = env.intent("camp.0")
    assert (intent["status"], intent["deferred_to"]) == ("deferred", name)
    expected = next_opening(env.now_ny, env.closed_hours[0]).astimezone(UTC)
    assert datetime.fromisoformat(intent["next_allowed_at"]) == expected
    schedule = env.schedule(name)
    assert schedule["ScheduleExpression"] == f"at({expected:%Y-%m-%dT%H:%M:%S})"
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert json.loads(schedule["Target"]["Input"]) == {
        "agent_id": CLOSED_NOW,
        "to": NEW_YORK,
        "facts": {"patient_name": "Ada"},
        "attempt": 1,
        "dial_id": name,
    }
    assert env.stub.requests == []


def test_a_payload_that_is_not_a_dial_fails_the_invocation(env: Env) -> None:
    with pytest.raises(ValidationError):
        invoke({"agent_id": ALWAYS_OPEN, "to": "not a number"})
    assert env.stub.requests == []


# -- CallCompleted retries -------------------------------------------------------------------------------


def test_no_answer_schedules_one_retry_even_for_duplicate_events(env: Env) -> None:
    callee = open_number()
    sid = response_json(post("/calls", dial_body(to=callee, facts={"patient_name": "Ada"})))["call_sid"]
    before = datetime.now(UTC)
    first = invoke(call_completed(sid, "no-answer", attempt=1))
    duplicate = invoke(call_completed(sid, "no-answer", attempt=1))
    assert (first["decision"], first["schedule_name"]) == ("scheduled", f"retry-{sid}")
    assert duplicate["decision"] == "already_scheduled"
    assert env.schedule_names() == [f"retry-{sid}"]
    schedule = env.schedule(f"retry-{sid}")
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert (schedule["Target"]["Arn"], schedule["Target"]["RoleArn"]) == (DIALER_ARN, ROLE_ARN)
    assert json.loads(schedule["Target"]["Input"]) == {
        "agent_id": ALWAYS_OPEN,
        "to": callee,
        "facts": {"patient_name": "Ada"},
        "attempt": 2,
        "dial_id": f"retry-{sid}",
    }
    # 90 minutes on, or up to a minute more when that lands in the agent's closed minute 23:59.
    at = datetime.fromisoformat(first["at"])
    assert before + timedelta(minutes=90) <= at <= datetime.now(UTC) + timedelta(minutes=92)
    # When it fires, attempt 2 is dialed and recorded as such.
    [entry] = invoke(as_scheduler_delivers(schedule))["dials"]
    call = env.records.get_call(entry["call_sid"])
    assert call is not None
    assert (call.attempt, call.facts) == (2, {"patient_name": "Ada"})


def test_busy_on_the_last_attempt_is_not_retried(env: Env) -> None:
    sid = response_json(post("/calls", dial_body(attempt=3)))["call_sid"]
    assert invoke(call_completed(sid, "busy", attempt=3))["decision"] == "attempts_exhausted"
    assert env.schedule_names() == []


def test_an_answered_call_is_not_retried(env: Env) -> None:
    sid = response_json(post("/calls", dial_body()))["call_sid"]
    assert invoke(call_completed(sid, "completed", attempt=1))["decision"] == "not_retried_status"
    assert env.schedule_names() == []


# -- the API description ---------------------------------------------------------------------------------


def test_the_openapi_spec_describes_the_routes_and_their_models() -> None:
    spec = json.loads(handler.app.get_openapi_json_schema(title="Switchboard dialer"))
    assert set(spec["paths"]) == {"/calls", "/schedules", "/calls/{sid}"}
    post_calls = spec["paths"]["/calls"]["post"]
    assert post_calls["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DialRequest"
    }
    assert {"201", "403", "409", "422", "502", "503"} <= set(post_calls["responses"])
    assert {"DialRequest", "ScheduleRequest", "DialAccepted", "ScheduleCreated", "ErrorBody", "CallTimeline"} <= set(
        spec["components"]["schemas"]
    )
