"""One function's cold init and warm handler time, in this fresh process (run by bench/functions.py).

Prints JSON: import_ms (the handler module and everything it imports), init_ms (settings, clients and
agents: what a cold start builds before the first request), first_ms (the first request, which also
reads the Twilio secret), warm_ms_p50 / warm_ms_p95 over the next requests. AWS is moto's server.
"""

import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

FUNCTIONS = ("voice_webhook", "status_callback", "tool_actions", "dialer")
WARM_REQUESTS = 100


def _calls(count: int) -> list[str]:
    """Fresh inbound calls, one per request, each with a short conversation: a request's work does not
    grow with the requests before it (the status history, the timeline and the tool log stay typical)."""
    from switchboard.call import Call, CallDirection
    from switchboard.records import CallRecords
    from switchboard.turn import Role, Turn

    records = CallRecords(os.environ["CALLS_TABLE"])
    sids = []
    now = datetime.now(UTC)
    for _ in range(count):
        sid = "CA" + os.urandom(16).hex()
        records.create_call(
            Call(
                call_sid=sid,
                direction=CallDirection.INBOUND,
                from_number="+15550101234",
                to_number="+15550100200",
                agent_id="clinic-receptionist",
                created_at=now,
            )
        )
        for index in range(4):
            role = Role.USER if index % 2 else Role.ASSISTANT
            records.put_turn(
                Turn(
                    call_sid=sid,
                    index=index,
                    role=role,
                    text="A sentence of a typical length, said on a call.",
                    started_at=now,
                    ended_at=now,
                )
            )
        sids.append(sid)
    return sids


def _events(function: str, call_sid: Callable[[], str]) -> Callable[[int], dict[str, Any]]:
    from tests.support.apigw import json_event, rest_event, twilio_form_event
    from tests.support.twilio_stub import ACCOUNT_SID, AUTH_TOKEN

    api = os.environ["PUBLIC_API_URL"]
    calls = _calls(WARM_REQUESTS + 1) if function != "voice_webhook" else []
    if function == "voice_webhook":
        # A new inbound call per request: signature check, agent lookup, record write, token, TwiML.
        def voice(_: int) -> dict[str, Any]:
            form = {
                "AccountSid": ACCOUNT_SID,
                "CallSid": call_sid(),
                "From": "+15550101234",
                "To": "+15550100200",
                "Direction": "inbound",
                "CallStatus": "ringing",
            }
            return twilio_form_event("/twilio/voice", form, auth_token=AUTH_TOKEN, public_url=api + "/twilio/voice")

        return voice
    if function == "status_callback":

        def status(index: int) -> dict[str, Any]:
            form = {
                "AccountSid": ACCOUNT_SID,
                "CallSid": calls[index],
                "From": "+15550101234",
                "To": "+15550100200",
                "Direction": "inbound",
                "CallStatus": "in-progress",
                "SequenceNumber": "1",
                "Timestamp": datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
            }
            return twilio_form_event("/twilio/status", form, auth_token=AUTH_TOKEN, public_url=api + "/twilio/status")

        return status
    if function == "tool_actions":

        def tool(index: int) -> dict[str, Any]:
            return json_event(
                "POST",
                "/tools/end_call",
                {"call_sid": calls[index], "arguments": {"reason": "the caller is done"}},
                resource="/tools/{name}",
                path_parameters={"name": "end_call"},
                iam_user_arn="arn:aws:sts::123456789012:assumed-role/switchboard-streaming/bench",
            )

        return tool

    def timeline(index: int) -> dict[str, Any]:
        return rest_event(
            "GET",
            f"/calls/{calls[index]}",
            resource="/calls/{sid}",
            path_parameters={"sid": calls[index]},
            iam_user_arn="arn:aws:sts::123456789012:assumed-role/ops/bench",
        )

    return timeline


def main(function: str) -> dict[str, Any]:
    started = time.perf_counter()
    handler = importlib.import_module(f"functions.{function}.handler")
    imported = time.perf_counter()
    handler.dependencies()
    initialised = time.perf_counter()

    from tests.support.apigw import LambdaContext

    events = _events(function, lambda: "CA" + os.urandom(16).hex())
    context = LambdaContext()
    first_started = time.perf_counter()
    response = handler.lambda_handler(events(0), context)
    first = time.perf_counter() - first_started
    if response["statusCode"] >= 300:
        raise RuntimeError(f"{function}: {response['statusCode']} {response['body']}")
    warm = []
    for index in range(1, WARM_REQUESTS + 1):
        event = events(index)
        began = time.perf_counter()
        handler.lambda_handler(event, context)
        warm.append((time.perf_counter() - began) * 1000)
    warm.sort()
    # What one DynamoDB round trip to moto's server costs here, to read the warm numbers against.
    import boto3

    dynamodb = boto3.client("dynamodb")
    trips = []
    for _ in range(50):
        began = time.perf_counter()
        dynamodb.describe_table(TableName=os.environ["CALLS_TABLE"])
        trips.append((time.perf_counter() - began) * 1000)
    trips.sort()
    return {
        "aws_round_trip_ms_p50": round(trips[len(trips) // 2], 2),
        "import_ms": round((imported - started) * 1000, 1),
        "init_ms": round((initialised - imported) * 1000, 1),
        "first_ms": round(first * 1000, 1),
        "warm_ms_p50": round(warm[len(warm) // 2], 2),
        "warm_ms_p95": round(warm[int(len(warm) * 0.95)], 2),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
