"""A local Amazon Polly: the real boto3 client talks to it over HTTP (endpoint_url=stub.url).

It speaks Polly's REST protocol for the two operations Switchboard uses:

- POST /v1/speech (SynthesizeSpeech): validates the request as Polly does (voice, engine, sample rate,
  SSML well-formed, length), then streams PCM16 for the text with chunked transfer encoding, in
  `pacing.chunk_bytes` pieces after `pacing.first_byte_s`, `pacing.interval_s` apart. The audio is the
  simulated TTS's for the SSML's text (deterministic, speech-like). What it does with the next requests can
  be queued: throttle them (HTTP 400 ThrottlingException, as Polly), fail them, hold a stream after some
  bytes until released (and notice the client closing meanwhile), or break a stream off half-way.
- GET /v1/voices (DescribeVoices): the stub's voices, filtered by Engine and LanguageCode, paginated.

Every request is recorded with the time each chunk was written (time.perf_counter, this process's clock),
so a benchmark can measure what an adapter adds between Polly's bytes and its own audio out.
"""

import json
import secrets
import select
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from streaming.providers.simulated import speech_audio

MAX_BILLED_CHARACTERS: Final = 3000
MAX_TOTAL_CHARACTERS: Final = 6000


@dataclass(frozen=True)
class StubVoice:
    id: str
    language: str
    engines: tuple[str, ...]
    additional_languages: tuple[str, ...] = ()

    def described(self) -> dict[str, Any]:
        voice: dict[str, Any] = {
            "Gender": "Female",
            "Id": self.id,
            "Name": self.id,
            "LanguageCode": self.language,
            "LanguageName": self.language,
            "SupportedEngines": list(self.engines),
        }
        if self.additional_languages:
            voice["AdditionalLanguageCodes"] = list(self.additional_languages)
        return voice


# A few of Polly's voices, with what Polly says of them.
DEFAULT_VOICES: Final = (
    StubVoice("Joanna", "en-US", ("neural", "standard")),
    StubVoice("Matthew", "en-US", ("generative", "neural", "standard")),
    StubVoice("Amy", "en-GB", ("generative", "neural", "standard")),
    StubVoice("Aditi", "en-IN", ("standard",), ("hi-IN",)),
    StubVoice("Lucia", "es-ES", ("neural", "standard")),
)


@dataclass(frozen=True)
class Pacing:
    """How the stub streams audio: the first chunk after `first_byte_s`, then one every `interval_s`."""

    first_byte_s: float = 0.0
    chunk_bytes: int = 1600
    interval_s: float = 0.0


@dataclass(frozen=True)
class Throttle:
    """Answer HTTP 400 ThrottlingException, as Polly does over its quota."""


@dataclass(frozen=True)
class Fail:
    status: int = 500
    code: str = "ServiceFailureException"
    message: str = "Service failure"


@dataclass(frozen=True)
class Hold:
    """Stream `after_bytes`, then wait until `PollyStub.release()` before the rest."""

    after_bytes: int


@dataclass(frozen=True)
class BreakOff:
    """Stream `after_bytes`, then drop the connection without ending the body."""

    after_bytes: int


Behaviour = Throttle | Fail | Hold | BreakOff


@dataclass
class SpeechRequest:
    """One SynthesizeSpeech request as the stub received it, and what became of its response."""

    body: dict[str, Any]
    client_port: int = 0  # which connection of the client's it came on
    status: int = 0
    audio_bytes: int = 0  # how much audio the response had in all
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (perf_counter as written, bytes)
    closed_by_client: bool = False  # the client closed the connection before the body ended

    @property
    def ssml(self) -> str:
        return str(self.body.get("Text", ""))

    @property
    def spoken(self) -> str:
        """The text Polly would say: the SSML's character data."""
        return _spoken_text(self.ssml)

    @property
    def bytes_sent(self) -> int:
        return sum(size for _, size in self.chunks)


class PollyStub:
    def __init__(self, voices: tuple[StubVoice, ...] = DEFAULT_VOICES, voices_page_size: int = 2) -> None:
        self.url = ""
        self.voices = voices
        self.voices_page_size = voices_page_size
        self.pacing = Pacing()
        self.speech: list[SpeechRequest] = []
        self.voice_queries: list[dict[str, str]] = []
        self.client_closed = threading.Event()  # a held or streaming response saw the client close
        self._behaviours: list[Behaviour] = []
        self._release = threading.Event()
        self._lock = threading.Lock()

    def queue(self, *behaviours: Behaviour) -> None:
        """What the next speech requests get, one each, in order; after them, plain audio."""
        with self._lock:
            self._behaviours.extend(behaviours)

    def throttle_next(self, count: int) -> None:
        self.queue(*([Throttle()] * count))

    def release(self) -> None:
        """Let a held stream (Hold) send the rest of its audio."""
        self._release.set()

    def audio_for(self, text: str) -> bytes:
        """The PCM16 the stub sends for `text` (plain text, as spoken)."""
        return speech_audio(text)

    def _next(self, request: SpeechRequest) -> Behaviour | None:
        with self._lock:
            self.speech.append(request)
            return self._behaviours.pop(0) if self._behaviours else None


def _spoken_text(ssml: str) -> str:
    return "".join(ET.fromstring(ssml).itertext())  # noqa: S314 - our own test client's SSML


def _handler(stub: PollyStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, as Polly
        # Each chunk goes out when written: with Nagle's algorithm a chunk written right after the headers
        # would wait for the client's delayed ACK (40 ms), a delay of the stub's, not of the adapter's.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read the stub's records instead."""

        def _json(self, status: int, body: dict[str, Any], error_type: str | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", secrets.token_hex(16))
            if error_type is not None:
                self.send_header("x-amzn-ErrorType", error_type)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: str, message: str) -> None:
            self._json(status, {"__type": code, "message": message}, error_type=code)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/v1/voices":
                self._error(404, "UnknownOperationException", f"no route {url.path}")
                return
            query = {name: values[-1] for name, values in parse_qs(url.query).items()}
            stub.voice_queries.append(query)
            voices = [
                voice
                for voice in stub.voices
                if ("Engine" not in query or query["Engine"] in voice.engines)
                and (
                    "LanguageCode" not in query
                    or query["LanguageCode"] == voice.language
                    or (
                        query.get("IncludeAdditionalLanguageCodes") == "true"
                        and query["LanguageCode"] in voice.additional_languages
                    )
                )
            ]
            start = int(query.get("NextToken", "0"))
            page = voices[start : start + stub.voices_page_size]
            body: dict[str, Any] = {"Voices": [voice.described() for voice in page]}
            if start + stub.voices_page_size < len(voices):
                body["NextToken"] = str(start + stub.voices_page_size)
            self._json(200, body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if urlsplit(self.path).path != "/v1/speech":
                self._error(404, "UnknownOperationException", f"no route {self.path}")
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._error(400, "SerializationException", "body is not JSON")
                return
            request = SpeechRequest(body, client_port=int(self.client_address[1]))
            behaviour = stub._next(request)
            problem = _invalid(stub, body)
            if problem is not None:
                request.status = problem[0]
                self._error(*problem)
                return
            if isinstance(behaviour, Throttle):
                request.status = 400
                self._error(400, "ThrottlingException", "Rate exceeded")
                return
            if isinstance(behaviour, Fail):
                request.status = behaviour.status
                self._error(behaviour.status, behaviour.code, behaviour.message)
                return
            self._stream(request, behaviour)

        def _stream(self, request: SpeechRequest, behaviour: Hold | BreakOff | None) -> None:
            audio = stub.audio_for(request.spoken)
            request.status = 200
            request.audio_bytes = len(audio)
            pacing = stub.pacing
            time.sleep(pacing.first_byte_s)
            self.send_response(200)
            self.send_header("Content-Type", "audio/pcm")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("x-amzn-RequestCharacters", str(len(request.spoken)))
            self.send_header("x-amzn-RequestId", secrets.token_hex(16))
            self.end_headers()
            self.wfile.flush()
            stop_at = behaviour.after_bytes if isinstance(behaviour, Hold | BreakOff) else None
            offset = 0
            try:
                while offset < len(audio):
                    if offset and pacing.interval_s:
                        time.sleep(pacing.interval_s)
                    end = min(len(audio), offset + pacing.chunk_bytes)
                    if stop_at is not None and offset < stop_at:
                        end = min(end, stop_at)
                    self._chunk(request, audio[offset:end])
                    offset = end
                    if stop_at is not None and offset == stop_at:
                        if isinstance(behaviour, BreakOff):
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        if not self._held():
                            request.closed_by_client = True
                            stub.client_closed.set()
                            self.close_connection = True
                            return
                        stop_at = None
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                request.closed_by_client = True
                stub.client_closed.set()
                self.close_connection = True

        def _chunk(self, request: SpeechRequest, data: bytes) -> None:
            # Timed as the write begins: once it is written, the client may have read it already.
            started = time.perf_counter()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            request.chunks.append((started, len(data)))

        def _held(self) -> bool:
            """Wait for release(); False as soon as the client closes the connection instead."""
            while not stub._release.is_set():
                readable, _, _ = select.select([self.connection], [], [], 0.01)
                try:
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        return False
                except ConnectionResetError:
                    return False
            return True

    return Handler


def _invalid(stub: PollyStub, body: dict[str, Any]) -> tuple[int, str, str] | None:
    """Polly's answer to a request it would refuse, or None."""
    for name in ("OutputFormat", "Text", "VoiceId"):
        if name not in body:
            return 400, "ValidationException", f"{name} is required"
    if body["OutputFormat"] != "pcm":
        return 400, "ValidationException", "the stub streams pcm only"
    if body.get("SampleRate") not in ("8000", "16000"):
        return 400, "InvalidSampleRateException", "pcm takes SampleRate 8000 or 16000"
    text = str(body["Text"])
    billed = text
    if body.get("TextType") == "ssml":
        try:
            root = ET.fromstring(text)  # noqa: S314 - parsing what the client under test sent, as Polly does
        except ET.ParseError as exc:
            return 400, "InvalidSsmlException", f"Invalid SSML request: {exc}"
        if root.tag != "speak":
            return 400, "InvalidSsmlException", "the root element must be <speak>"
        billed = "".join(root.itertext())
    if len(billed) > MAX_BILLED_CHARACTERS or len(text) > MAX_TOTAL_CHARACTERS:
        return 400, "TextLengthExceededException", "Maximum text length has been exceeded"
    voice = next((voice for voice in stub.voices if voice.id == body["VoiceId"]), None)
    if voice is None:
        return 400, "ValidationException", f"unknown voice {body['VoiceId']}"
    engine = body.get("Engine", "standard")
    if engine not in voice.engines:
        return 400, "EngineNotSupportedException", f"{voice.id} does not support the {engine} engine"
    language = body.get("LanguageCode")
    if language is not None and language != voice.language and language not in voice.additional_languages:
        return 400, "LanguageNotSupportedException", f"{voice.id} does not speak {language}"
    return None


@contextmanager
def running_polly_stub(stub: PollyStub | None = None) -> Iterator[PollyStub]:
    """Serve `stub` (a default one if None) on a free port of 127.0.0.1; yields it with its url set."""
    stub = stub if stub is not None else PollyStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="polly-stub", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.release()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
