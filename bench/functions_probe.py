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
WARM_REQUESTS = 200


def _events(function: str, call_sid: Callable[[], str]) -> Callable[[int], dict[str, Any]]:
    from tests.support.apigw import json_event, rest_event, twilio_form_event
    from tests.support.twilio_stub import ACCOUNT_SID, AUTH_TOKEN

    api = os.environ["PUBLIC_API_URL"]
    known = os.environ["BENCH_CALL_SID"]
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
                "CallSid": known,
                "From": "+15550101234",
                "To": "+15550100200",
                "Direction": "inbound",
                "CallStatus": "in-progress",
                "SequenceNumber": str(index + 1),
                "Timestamp": datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
            }
            return twilio_form_event("/twilio/status", form, auth_token=AUTH_TOKEN, public_url=api + "/twilio/status")

        return status
    if function == "tool_actions":

        def tool(index: int) -> dict[str, Any]:
            return json_event(
                "POST",
                "/tools/end_call",
                {"call_sid": known, "arguments": {"reason": f"benchmark {index}"}},
                resource="/tools/{name}",
                path_parameters={"name": "end_call"},
                iam_user_arn="arn:aws:sts::123456789012:assumed-role/switchboard-streaming/bench",
            )

        return tool

    def timeline(_: int) -> dict[str, Any]:
        return rest_event(
            "GET",
            f"/calls/{known}",
            resource="/calls/{sid}",
            path_parameters={"sid": known},
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
    return {
        "import_ms": round((imported - started) * 1000, 1),
        "init_ms": round((initialised - imported) * 1000, 1),
        "first_ms": round(first * 1000, 1),
        "warm_ms_p50": round(warm[len(warm) // 2], 2),
        "warm_ms_p95": round(warm[int(len(warm) * 0.95)], 2),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
