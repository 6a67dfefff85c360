"""A local Twilio REST API: the real `twilio` client talks to it over HTTP (set TWILIO_API_BASE_URL).

It understands the calls Switchboard makes (create and update calls, create messages), checks the account
and Basic auth like Twilio does, records every request, and fails on demand with Twilio's error shape.
"""

import base64
import itertools
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "stub-auth-token"

_ROUTES = {
    "create_call": re.compile(r"^/2010-04-01/Accounts/(?P<account>AC\w+)/Calls\.json$"),
    "update_call": re.compile(r"^/2010-04-01/Accounts/(?P<account>AC\w+)/Calls/(?P<sid>CA\w+)\.json$"),
    "create_message": re.compile(r"^/2010-04-01/Accounts/(?P<account>AC\w+)/Messages\.json$"),
}


@dataclass(frozen=True)
class TwilioRequest:
    action: str
    path: str
    params: dict[str, list[str]]

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[-1] if values else None


@dataclass(frozen=True)
class TwilioFailure:
    status: int
    code: int
    message: str


@dataclass
class TwilioStub:
    url: str = ""
    requests: list[TwilioRequest] = field(default_factory=list)
    _failures: dict[str, list[TwilioFailure]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def fail_next(self, action: str, status: int = 400, code: int = 21211, message: str = "Invalid number") -> None:
        """The next request of `action` (create_call, update_call, create_message) gets a Twilio error."""
        with self._lock:
            self._failures.setdefault(action, []).append(TwilioFailure(status, code, message))

    def of(self, action: str) -> list[TwilioRequest]:
        with self._lock:
            return [r for r in self.requests if r.action == action]

    def _record(self, request: TwilioRequest) -> TwilioFailure | None:
        with self._lock:
            self.requests.append(request)
            pending = self._failures.get(request.action)
            return pending.pop(0) if pending else None

    def _sid(self, prefix: str) -> str:
        return prefix + f"{next(self._ids):032x}"


def _handler(stub: TwilioStub) -> type[BaseHTTPRequestHandler]:
    expected_auth = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read stub.requests instead."""

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            params = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
            if self.headers.get("Authorization") != expected_auth:
                self._reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
                return
            for action, pattern in _ROUTES.items():
                match = pattern.match(self.path)
                if match is None:
                    continue
                if match["account"] != ACCOUNT_SID:
                    self._reply(404, {"code": 20404, "message": "Not found", "status": 404})
                    return
                failure = stub._record(TwilioRequest(action, self.path, params))
                if failure is not None:
                    self._reply(
                        failure.status, {"code": failure.code, "message": failure.message, "status": failure.status}
                    )
                    return
                self._reply(201 if action.startswith("create") else 200, _resource(stub, action, match, params))
                return
            self._reply(404, {"code": 20404, "message": f"No route {self.path}", "status": 404})

    return Handler


def _resource(stub: TwilioStub, action: str, match: re.Match[str], params: dict[str, list[str]]) -> dict[str, Any]:
    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    if action == "create_message":
        return {
            "sid": stub._sid("SM"),
            "account_sid": ACCOUNT_SID,
            "to": one("To"),
            "from": one("From"),
            "body": one("Body"),
            "status": "queued",
            "num_segments": "1",
        }
    sid = match.groupdict().get("sid") or stub._sid("CA")
    return {
        "sid": sid,
        "account_sid": ACCOUNT_SID,
        "to": one("To"),
        "from": one("From"),
        "status": one("Status") or "queued",
        "direction": "outbound-api",
    }


@contextmanager
def running_twilio_stub() -> Iterator[TwilioStub]:
    stub = TwilioStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="twilio-stub", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def random_call_sid() -> str:
    return "CA" + secrets.token_hex(16)
