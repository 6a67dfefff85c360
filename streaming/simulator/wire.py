"""Twilio's side of the Media Streams wire format: the messages Twilio sends, and what the server sends back.

Shapes follow Twilio's documentation (docs: /work/shared/reference/twilio.md): numbers Twilio sends as
strings (`sequenceNumber`, `chunk`, `timestamp`) are strings here too, `connected` carries no streamSid,
`start` is sequence number 1. Server messages are parsed with pydantic; anything else is malformed.
"""

import json
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from streaming.protocol import Base64Bytes

TRACKS: Final = ["inbound"]
MEDIA_FORMAT: Final = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}

# Built by hand: json.dumps per 20 ms frame costs several times more, and every part is our own text.
_MEDIA_TEMPLATE: Final = (
    '{"event":"media","sequenceNumber":"%d","streamSid":"%s",'
    '"media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)


def connected_message() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(
    sequence: int, stream_sid: str, call_sid: str, account_sid: str, custom_parameters: dict[str, str]
) -> str:
    start = {
        "accountSid": account_sid,
        "streamSid": stream_sid,
        "callSid": call_sid,
        "tracks": TRACKS,
        "customParameters": custom_parameters,
        "mediaFormat": MEDIA_FORMAT,
    }
    return json.dumps({"event": "start", "sequenceNumber": str(sequence), "streamSid": stream_sid, "start": start})


def media_message(sequence: int, stream_sid: str, chunk: int, timestamp_ms: int, payload_b64: str) -> str:
    return _MEDIA_TEMPLATE % (sequence, stream_sid, chunk, timestamp_ms, payload_b64)


def dtmf_message(sequence: int, stream_sid: str, digit: str) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def mark_echo_message(sequence: int, stream_sid: str, name: str) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(sequence), "streamSid": stream_sid, "mark": {"name": name}}
    )


def stop_message(sequence: int, stream_sid: str, call_sid: str, account_sid: str) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )


class _ServerMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _MediaBody(_ServerMessage):
    payload: Base64Bytes


class ServerMedia(_ServerMessage):
    event: Literal["media"]
    stream_sid: str = Field(alias="streamSid")
    media: _MediaBody


class _MarkBody(_ServerMessage):
    name: str


class ServerMark(_ServerMessage):
    event: Literal["mark"]
    stream_sid: str = Field(alias="streamSid")
    mark: _MarkBody


class ServerClear(_ServerMessage):
    event: Literal["clear"]
    stream_sid: str = Field(alias="streamSid")


ServerMessage = ServerMedia | ServerMark | ServerClear
_SERVER: TypeAdapter[ServerMessage] = TypeAdapter(Annotated[ServerMessage, Field(discriminator="event")])


class MalformedServerMessage(ValueError):
    """The server sent something that is not a media, mark or clear message."""


def parse_server_message(frame: str | bytes) -> ServerMessage:
    if isinstance(frame, bytes):
        raise MalformedServerMessage("binary frame")
    try:
        return _SERVER.validate_json(frame)
    except ValidationError as exc:
        raise MalformedServerMessage(str(exc.errors(include_url=False, include_input=False)[0]["msg"])) from None
