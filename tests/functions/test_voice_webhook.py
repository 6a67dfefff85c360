"""functions/voice_webhook: the handler with API Gateway events signed like Twilio signs them, moto for AWS
(DynamoDB, Secrets Manager, EventBridge → SQS) and the local Twilio REST stub for the real twilio client."""

import base64
import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from functions.voice_webhook import handler
from switchboard.call import Call, CallDirection, CallStatus
from switchboard.observability import metrics
from switchboard.records import CallRecords, table_definition
from switchboard.stream_token import StreamTokenSigner
from tests.support.apigw import LambdaContext, sign, twilio_form_event
from tests.support.event_bus import PublishedEvents
from tests.support.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, TwilioStub, random_call_sid

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

REPO = Path(__file__).resolve().parents[2]
TABLE = "switchboard-calls"
BUS = "switchboard-calls"
PUBLIC_API_URL = "https://abc123.execute-api.us-east-1.amazonaws.com/prod"
STREAM_URL = "wss://media.example.com/media"
STREAM_KEY = "stream-token-key-0123456789abcdefghijklmnopqrstuvwxyz"
MAX_STREAM_RESUMES = 2

CLINIC_NUMBER = "+15550100200"  # answered by agents/clinic-receptionist.yaml
REMINDER_NUMBER = "+15550100300"  # agents/appointment-reminder.yaml calls from it, leaves a message
COURIER_NUMBER = "+15550100400"  # the test's courier-notice agent calls from it, hangs up on machines
CALLER = "+15557654321"

# An outbound agent whose voicemail action is hang_up, written next to the repository's agents.
COURIER_AGENT = """\
id: courier-notice
name: Courier delivery notices
directions: [outbound]
voice: {id: Ruth, engine: generative}
greeting: "Hello, this is the courier about your delivery."
system_prompt: "You tell people when their parcel arrives."
outbound:
  from_number: "+15550100400"
  allowed_countries: [US]
  voicemail: {action: hang_up}
"""


@dataclass(frozen=True)
class Env:
    records: CallRecords
    dynamodb: "DynamoDBClient"
    bus: PublishedEvents
    twilio: TwilioStub

    def published(self) -> list[dict[str, Any]]:
        """Every event that reached the bus since the last look."""
        return self.bus.drain()

    def call_item(self, sid: str) -> dict[str, Any]:
        item = self.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": f"CALL#{sid}"}, "sk": {"S": "CALL"}})
        return item.get("Item", {})

    def item_count(self) -> int:
        return int(self.dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"])


@pytest.fixture
def env(aws_env: None, twilio_stub: TwilioStub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Env]:
    agents_dir = tmp_path / "agents"
    shutil.copytree(REPO / "agents", agents_dir)
    (agents_dir / "courier-notice.yaml").write_text(COURIER_AGENT)
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(**table_definition(TABLE))
        secrets = boto3.client("secretsmanager")
        twilio_secret = secrets.create_secret(
            Name="switchboard/twilio", SecretString=json.dumps({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN})
        )["ARN"]
        stream_secret = secrets.create_secret(Name="switchboard/stream-token", SecretString=STREAM_KEY)["ARN"]
        events = boto3.client("events")
        events.create_event_bus(Name=BUS)
        bus = PublishedEvents(BUS)
        for name, value in {
            "CALLS_TABLE": TABLE,
            "AGENTS_DIR": str(agents_dir),
            "TWILIO_SECRET_ARN": twilio_secret,
            "TWILIO_API_BASE_URL": twilio_stub.url,
            "PUBLIC_API_URL": PUBLIC_API_URL,
            "PUBLIC_STREAM_URL": STREAM_URL,
            "STREAM_TOKEN_SECRET_ARN": stream_secret,
            "MAX_STREAM_RESUMES": str(MAX_STREAM_RESUMES),
            "EVENT_BUS_NAME": BUS,
            "POWERTOOLS_TRACE_DISABLED": "true",
        }.items():
            monkeypatch.setenv(name, value)
        handler.dependencies.cache_clear()
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        yield Env(CallRecords(TABLE, dynamodb), dynamodb, bus, twilio_stub)
        handler.dependencies.cache_clear()
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        metrics.clear_metrics()


# -- requests --------------------------------------------------------------------------------------------


def voice_form(sid: str, *, direction: str = "inbound", to: str = CLINIC_NUMBER, from_: str = CALLER) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": sid,
        "CallStatus": "ringing" if direction == "inbound" else "in-progress",
        "Called": to,
        "Caller": from_,
        "Direction": direction,
        "From": from_,
        "To": to,
        "CallerCountry": "US",
    }


def post(
    path: str,
    params: dict[str, str] | list[tuple[str, str]],
    *,
    query: dict[str, str] | None = None,
    signature: str | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """A webhook as Twilio sends it to the public URL, through API Gateway to the handler."""
    event = twilio_form_event(
        path, params, auth_token=AUTH_TOKEN, public_url=PUBLIC_API_URL + path, query=query, signature=signature
    )
    if base64_body:
        event["body"] = base64.b64encode(event["body"].encode()).decode()
        event["isBase64Encoded"] = True
    response: dict[str, Any] = handler.lambda_handler(event, LambdaContext())
    return response


def outbound_form(sid: str, agent_number: str = REMINDER_NUMBER, callee: str = CALLER) -> dict[str, str]:
    return voice_form(sid, direction="outbound-api", to=callee, from_=agent_number)


@dataclass(frozen=True)
class Connect:
    action: str
    method: str
    stream_url: str
    parameters: dict[str, str]


def twiml(response: dict[str, Any]) -> ET.Element:
    assert response["statusCode"] == 200
    assert response["multiValueHeaders"]["Content-Type"] == ["text/xml"]
    root = ET.fromstring(response["body"])  # noqa: S314 - the handler's own TwiML
    assert root.tag == "Response"
    return root


def connect_of(response: dict[str, Any]) -> Connect:
    root = twiml(response)
    assert [child.tag for child in root] == ["Connect"]
    connect = root[0]
    [stream] = list(connect)
    assert stream.tag == "Stream"
    assert all(child.tag == "Parameter" for child in stream)
    return Connect(
        action=connect.attrib["action"],
        method=connect.attrib["method"],
        stream_url=stream.attrib["url"],
        parameters={child.attrib["name"]: child.attrib["value"] for child in stream},
    )


def verbs(response: dict[str, Any]) -> list[str]:
    return [child.tag for child in twiml(response)]


def assert_token_for(token: str, sid: str) -> None:
    claims = StreamTokenSigner(STREAM_KEY.encode()).verify(token, sid)
    assert claims.call_sid == sid


# -- POST /twilio/voice -----------------------------------------------------------------------------------


def test_inbound_call_is_recorded_and_connected_to_its_agent(env: Env) -> None:
    sid = random_call_sid()
    connect = connect_of(post("/twilio/voice", voice_form(sid)))
    assert connect.action == f"{PUBLIC_API_URL}/twilio/stream-ended"
    assert connect.method == "POST"
    assert connect.stream_url == STREAM_URL
    assert set(connect.parameters) == {"token", "agent_id", "direction", "resume"}
    assert connect.parameters["agent_id"] == "clinic-receptionist"
    assert connect.parameters["direction"] == "inbound"
    assert connect.parameters["resume"] == "0"
    assert_token_for(connect.parameters["token"], sid)

    call = env.records.get_call(sid)
    assert call is not None
    assert (call.direction, call.from_number, call.to_number, call.agent_id) == (
        CallDirection.INBOUND,
        CALLER,
        CLINIC_NUMBER,
        "clinic-receptionist",
    )
    assert call.status is CallStatus.RINGING
    [started] = env.published()
    assert started["detail-type"] == "CallStarted"
    assert started["detail"]["call_sid"] == sid
    assert started["detail"]["agent_id"] == "clinic-receptionist"
    assert started["detail"]["direction"] == "inbound"
    # The event names the call, never a party's number.
    assert CALLER not in json.dumps(started)


def test_replayed_voice_webhook_keeps_one_record_and_answers_alike(env: Env) -> None:
    sid = random_call_sid()
    first = connect_of(post("/twilio/voice", voice_form(sid)))
    created = env.records.get_call(sid)
    second = connect_of(post("/twilio/voice", voice_form(sid)))
    assert (second.action, second.stream_url, set(second.parameters)) == (
        first.action,
        first.stream_url,
        set(first.parameters),
    )
    assert second.parameters["token"] != first.parameters["token"]  # every connect gets a fresh token
    assert_token_for(second.parameters["token"], sid)
    assert env.records.get_call(sid) == created
    assert env.item_count() == 1
    assert [event["detail-type"] for event in env.published()] == ["CallStarted"]


def test_a_replayed_voice_webhook_after_the_conversation_ended_hangs_up(env: Env) -> None:
    sid = random_call_sid()
    connect_of(post("/twilio/voice", voice_form(sid)))
    env.records.end_conversation(sid, "agent_ended")
    root = twiml(post("/twilio/voice", voice_form(sid)))
    assert "Hangup" in [child.tag for child in root]
    assert root.find("Connect") is None


def test_a_number_no_agent_answers_gets_a_polite_goodbye_and_no_record(env: Env) -> None:
    sid = random_call_sid()
    response = post("/twilio/voice", voice_form(sid, to="+15550100999"))
    root = twiml(response)
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert "cannot take your call" in (root[0].text or "")
    assert env.item_count() == 0
    assert env.published() == []


def test_a_withheld_caller_cannot_be_recorded_and_is_refused(env: Env) -> None:
    sid = random_call_sid()
    response = post("/twilio/voice", voice_form(sid, from_="anonymous"))
    assert verbs(response) == ["Say", "Hangup"]
    assert env.item_count() == 0


def test_base64_encoded_body_is_read(env: Env) -> None:
    sid = random_call_sid()
    connect = connect_of(post("/twilio/voice", voice_form(sid), base64_body=True))
    assert_token_for(connect.parameters["token"], sid)
    assert env.records.get_call(sid) is not None


def test_outbound_call_with_its_record_uses_the_record(env: Env) -> None:
    sid = random_call_sid()
    dialed = Call(
        call_sid=sid,
        direction=CallDirection.OUTBOUND,
        from_number=REMINDER_NUMBER,
        to_number=CALLER,
        agent_id="appointment-reminder",
        created_at=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        attempt=2,
        facts={"patient_name": "Ada", "appointment_start": "2026-11-25T09:30:00-05:00"},
    )
    env.records.create_call(dialed)
    connect = connect_of(post("/twilio/voice", outbound_form(sid), query={"agent_id": "appointment-reminder"}))
    assert connect.parameters["agent_id"] == "appointment-reminder"
    assert connect.parameters["direction"] == "outbound"
    assert_token_for(connect.parameters["token"], sid)
    assert env.records.get_call(sid) == dialed  # facts and attempt untouched
    [started] = env.published()
    assert started["detail"]["attempt"] == 2
    assert started["detail"]["direction"] == "outbound"


def test_outbound_call_answered_before_the_dialer_recorded_it(env: Env) -> None:
    sid = random_call_sid()
    connect = connect_of(post("/twilio/voice", outbound_form(sid), query={"agent_id": "appointment-reminder"}))
    assert connect.parameters["agent_id"] == "appointment-reminder"
    call = env.records.get_call(sid)
    assert call is not None
    assert (call.direction, call.from_number, call.to_number, call.agent_id, call.attempt, call.facts) == (
        CallDirection.OUTBOUND,
        REMINDER_NUMBER,
        CALLER,
        "appointment-reminder",
        1,
        {},
    )
    assert call.status is CallStatus.IN_PROGRESS
    assert [event["detail-type"] for event in env.published()] == ["CallStarted"]


@pytest.mark.parametrize("query", [None, {"agent_id": "clinic-receptionist"}, {"agent_id": "no-such-agent"}])
def test_outbound_call_without_an_outbound_agent_is_refused(env: Env, query: dict[str, str] | None) -> None:
    response = post("/twilio/voice", outbound_form(random_call_sid()), query=query)
    assert verbs(response) == ["Say", "Hangup"]
    assert env.item_count() == 0


def test_the_openapi_spec_describes_the_webhooks() -> None:
    spec = handler.app.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
    for path in ("/twilio/voice", "/twilio/stream-ended", "/twilio/amd"):
        operation = spec["paths"][path]["post"]
        assert operation["tags"] == ["Twilio webhooks"]
        assert "application/x-www-form-urlencoded" in operation["requestBody"]["content"]
        assert "403" in operation["responses"]
    voice = spec["paths"]["/twilio/voice"]["post"]
    assert "text/xml" in voice["responses"]["200"]["content"]
    assert {"CallSid", "From", "To", "Direction"} <= set(spec["components"]["schemas"]["VoiceRequest"]["properties"])


# -- forged requests ---------------------------------------------------------------------------------------


def assert_forbidden(response: dict[str, Any]) -> None:
    assert response["statusCode"] == 403
    assert response["multiValueHeaders"]["Content-Type"] == ["text/plain"]
    assert "Twilio" in response["body"]


def test_forged_and_unsigned_requests_are_refused_and_counted(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    sid = random_call_sid()
    assert_forbidden(post("/twilio/voice", voice_form(sid), signature="bm90IGEgc2lnbmF0dXJl"))
    assert_forbidden(post("/twilio/voice", voice_form(sid), signature=""))
    assert_forbidden(post("/twilio/stream-ended", {"CallSid": sid, "AccountSid": ACCOUNT_SID}, signature="x"))
    assert_forbidden(
        post("/twilio/amd", {"CallSid": sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": "human"}, signature="")
    )
    assert env.item_count() == 0
    assert env.published() == []
    assert env.twilio.requests == []
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    counted = [line["ForgedWebhook"] for line in emf if "ForgedWebhook" in line]
    assert sum(value if isinstance(value, int | float) else sum(value) for value in counted) == 4


def test_a_signature_over_another_url_is_refused(env: Env) -> None:
    sid = random_call_sid()
    params = voice_form(sid)
    pairs = list(params.items())
    # Signed for the host the request claims (a spoofed Host header), for the URL without the stage,
    # and for the plain-http URL: none is the public URL Twilio was given.
    for url in (
        "https://evil.example.com/twilio/voice",
        "https://abc123.execute-api.us-east-1.amazonaws.com/twilio/voice",
        "http://abc123.execute-api.us-east-1.amazonaws.com/prod/twilio/voice",
    ):
        event = twilio_form_event(
            "/twilio/voice", params, auth_token=AUTH_TOKEN, public_url=url, signature=sign(url, pairs, AUTH_TOKEN)
        )
        event["headers"]["Host"] = "evil.example.com"
        event["multiValueHeaders"]["Host"] = ["evil.example.com"]
        assert_forbidden(handler.lambda_handler(event, LambdaContext()))
    assert env.item_count() == 0


def test_a_tampered_form_or_query_is_refused(env: Env) -> None:
    sid = random_call_sid()
    url = f"{PUBLIC_API_URL}/twilio/voice"
    genuine = list(voice_form(sid).items())
    signature = sign(url, genuine, AUTH_TOKEN)
    # The caller's number changed after signing; a second To appended; an agent_id added to the query.
    changed = [(name, "+15550000000" if name == "From" else value) for name, value in genuine]
    assert_forbidden(post("/twilio/voice", changed, signature=signature))
    assert_forbidden(post("/twilio/voice", [*genuine, ("To", "+15550100300")], signature=signature))
    assert_forbidden(post("/twilio/voice", genuine, query={"agent_id": "appointment-reminder"}, signature=signature))
    assert env.item_count() == 0


def test_a_forged_request_with_a_malformed_form_is_refused_before_validation(env: Env) -> None:
    # Powertools validates the form before any route code runs; the signature is still checked first.
    response = post("/twilio/voice", {"CallSid": "not-a-sid"}, signature="forged")
    assert_forbidden(response)
    # Signed by Twilio but not a voice request: a validation error, without the details.
    signed_but_malformed = post("/twilio/voice", {"CallSid": "not-a-sid", "AccountSid": ACCOUNT_SID})
    assert signed_but_malformed["statusCode"] == 422
    assert "not-a-sid" not in signed_but_malformed["body"]
    assert env.item_count() == 0


def test_a_body_that_is_not_base64_or_utf8_is_refused(env: Env) -> None:
    event = twilio_form_event(
        "/twilio/voice",
        voice_form(random_call_sid()),
        auth_token=AUTH_TOKEN,
        public_url=f"{PUBLIC_API_URL}/twilio/voice",
    )
    event["body"] = "%%% not base64 %%%"
    event["isBase64Encoded"] = True
    assert_forbidden(handler.lambda_handler(event, LambdaContext()))
    event["body"] = base64.b64encode(b"CallSid=\xff\xfe").decode()
    assert_forbidden(handler.lambda_handler(event, LambdaContext()))


# -- POST /twilio/stream-ended -------------------------------------------------------------------------------


def stream_ended_form(sid: str, status: str = "in-progress") -> dict[str, str]:
    return {"AccountSid": ACCOUNT_SID, "CallSid": sid, "CallStatus": status, "Direction": "inbound"}


def answered_inbound_call(env: Env) -> str:
    sid = random_call_sid()
    connect_of(post("/twilio/voice", voice_form(sid)))
    return sid


def test_a_dropped_stream_is_resumed_until_the_cap_then_the_call_ends(env: Env) -> None:
    sid = answered_inbound_call(env)
    tokens = set()
    for expected in range(1, MAX_STREAM_RESUMES + 1):
        connect = connect_of(post("/twilio/stream-ended", stream_ended_form(sid)))
        assert connect.action == f"{PUBLIC_API_URL}/twilio/stream-ended"
        assert connect.stream_url == STREAM_URL
        assert connect.parameters["resume"] == str(expected)
        assert connect.parameters["agent_id"] == "clinic-receptionist"
        assert_token_for(connect.parameters["token"], sid)
        tokens.add(connect.parameters["token"])
    assert len(tokens) == MAX_STREAM_RESUMES

    root = twiml(post("/twilio/stream-ended", stream_ended_form(sid)))
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root[0].attrib["voice"] == "Polly.Joanna-Neural"  # the agent's own voice apologises
    assert "sorry" in (root[0].text or "").lower()
    call = env.records.get_call(sid)
    assert call is not None
    assert call.conversation_ended == "stream_lost"
    assert call.stream_resumes == MAX_STREAM_RESUMES
    # From now on the call is over: a further stream-ended only hangs up.
    assert verbs(post("/twilio/stream-ended", stream_ended_form(sid))) == ["Hangup"]


def test_stream_ended_after_the_conversation_ended_hangs_up(env: Env) -> None:
    sid = answered_inbound_call(env)
    env.records.end_conversation(sid, "agent_ended")
    assert verbs(post("/twilio/stream-ended", stream_ended_form(sid))) == ["Hangup"]
    call = env.records.get_call(sid)
    assert call is not None
    assert call.stream_resumes == 0


def test_stream_ended_when_twilio_says_the_call_is_over_hangs_up(env: Env) -> None:
    sid = answered_inbound_call(env)
    assert verbs(post("/twilio/stream-ended", stream_ended_form(sid, status="completed"))) == ["Hangup"]
    call = env.records.get_call(sid)
    assert call is not None
    assert call.stream_resumes == 0


def test_stream_ended_for_an_unknown_call_hangs_up(env: Env) -> None:
    assert verbs(post("/twilio/stream-ended", stream_ended_form(random_call_sid()))) == ["Hangup"]
    assert env.item_count() == 0


# -- POST /twilio/amd ------------------------------------------------------------------------------------------


def answered_outbound_call(env: Env, agent_id: str = "appointment-reminder", number: str = REMINDER_NUMBER) -> str:
    sid = random_call_sid()
    connect_of(post("/twilio/voice", outbound_form(sid, agent_number=number), query={"agent_id": agent_id}))
    return sid


def amd_form(sid: str, answered_by: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "CallSid": sid,
        "AnsweredBy": answered_by,
        "MachineDetectionDuration": "4120",
    }


def empty_ok(response: dict[str, Any]) -> None:
    assert response["statusCode"] == 200
    assert response["body"] == ""


@pytest.mark.parametrize("answered_by", ["machine_end_beep", "machine_end_silence", "machine_end_other"])
def test_a_machine_gets_the_agents_voicemail_message(env: Env, answered_by: str) -> None:
    sid = answered_outbound_call(env)
    empty_ok(post("/twilio/amd", amd_form(sid, answered_by)))
    [update] = env.twilio.of("update_call")
    assert update.path.endswith(f"/Calls/{sid}.json")
    twiml_sent = ET.fromstring(update.param("Twiml") or "")  # noqa: S314 - TwiML we sent
    assert [child.tag for child in twiml_sent] == ["Say", "Hangup"]
    say = twiml_sent[0]
    assert say.attrib["voice"] == "Polly.Matthew-Neural"
    assert say.attrib["language"] == "en-US"
    assert (say.text or "").startswith("Hello, this is Maple Street Clinic with a reminder")
    call = env.records.get_call(sid)
    assert call is not None
    assert call.conversation_ended == "voicemail"
    assert call.answered_by == answered_by
    assert env.call_item(sid)["voicemail_outcome"] == {"S": "left_message"}


def test_a_machine_is_hung_up_on_when_the_agent_says_so(env: Env) -> None:
    sid = answered_outbound_call(env, "courier-notice", COURIER_NUMBER)
    empty_ok(post("/twilio/amd", amd_form(sid, "machine_end_beep")))
    [update] = env.twilio.of("update_call")
    assert update.param("Status") == "completed"
    assert update.param("Twiml") is None
    call = env.records.get_call(sid)
    assert call is not None
    assert call.conversation_ended == "voicemail"
    assert env.call_item(sid)["voicemail_outcome"] == {"S": "hung_up"}


@pytest.mark.parametrize("answered_by", ["human", "unknown", "fax", "machine_start"])
def test_a_human_or_unsure_result_changes_nothing(env: Env, answered_by: str) -> None:
    sid = answered_outbound_call(env)
    empty_ok(post("/twilio/amd", amd_form(sid, answered_by)))
    assert env.twilio.of("update_call") == []
    call = env.records.get_call(sid)
    assert call is not None
    assert call.conversation_ended is None
    assert call.answered_by == answered_by
    assert "voicemail_outcome" not in env.call_item(sid)


def test_a_repeated_machine_result_leaves_one_message(env: Env) -> None:
    sid = answered_outbound_call(env)
    empty_ok(post("/twilio/amd", amd_form(sid, "machine_end_beep")))
    empty_ok(post("/twilio/amd", amd_form(sid, "machine_end_beep")))
    assert len(env.twilio.of("update_call")) == 1


def test_a_twilio_error_on_the_voicemail_action_is_recorded_not_raised(env: Env) -> None:
    sid = answered_outbound_call(env)
    env.twilio.fail_next("update_call", status=404, code=20404, message="The requested resource was not found")
    empty_ok(post("/twilio/amd", amd_form(sid, "machine_end_silence")))
    assert len(env.twilio.of("update_call")) == 1
    call = env.records.get_call(sid)
    assert call is not None
    assert call.conversation_ended == "voicemail"  # the stream is hung up when it ends, not resumed
    outcome = env.call_item(sid)["voicemail_outcome"]["S"]
    assert outcome.startswith("failed: Twilio answered 404 (error 20404)")
    assert verbs(post("/twilio/stream-ended", stream_ended_form(sid))) == ["Hangup"]


def test_machine_detection_for_an_unknown_call_is_acknowledged(env: Env) -> None:
    empty_ok(post("/twilio/amd", amd_form(random_call_sid(), "machine_end_beep")))
    assert env.twilio.requests == []
    assert env.item_count() == 0
