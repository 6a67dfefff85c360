"""The TwiML builders, read back with an XML parser."""

import xml.etree.ElementTree as ET

import pytest

from switchboard.agent import Voice
from switchboard.twiml import connect_stream, hang_up, say_and_hang_up, say_voice


def parse(document: str) -> ET.Element:
    root = ET.fromstring(document)  # noqa: S314 - our own TwiML, not untrusted input
    assert root.tag == "Response"
    return root


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        ("neural", "Polly.Joanna-Neural"),
        ("generative", "Polly.Joanna-Generative"),
        ("standard", "Polly.Joanna"),
        ("long-form", "Polly.Joanna-Generative"),
    ],
)
def test_say_voice_names_the_polly_voice_and_engine(engine: str, expected: str) -> None:
    assert say_voice(Voice.model_validate({"id": "Joanna", "engine": engine})) == expected


def test_connect_stream_carries_the_action_url_and_every_parameter() -> None:
    root = parse(
        connect_stream(
            action_url="https://voice.example.com/prod/twilio/stream-ended",
            stream_url="wss://media.example.com/media",
            parameters={"token": "abc.def", "agent_id": "front-desk", "direction": "inbound", "resume": "0"},
        )
    )
    [connect] = list(root)
    assert connect.tag == "Connect"
    assert connect.attrib == {"action": "https://voice.example.com/prod/twilio/stream-ended", "method": "POST"}
    [stream] = list(connect)
    assert stream.attrib == {"url": "wss://media.example.com/media"}
    assert [(p.tag, p.attrib["name"], p.attrib["value"]) for p in stream] == [
        ("Parameter", "token", "abc.def"),
        ("Parameter", "agent_id", "front-desk"),
        ("Parameter", "direction", "inbound"),
        ("Parameter", "resume", "0"),
    ]


def test_say_and_hang_up_escapes_the_text() -> None:
    text = 'Fish & chips <b>"today"</b>'
    root = parse(say_and_hang_up(text, Voice(id="Matthew"), "en-US"))
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root[0].text == text
    assert root[0].attrib == {"voice": "Polly.Matthew-Neural", "language": "en-US"}


def test_say_without_a_voice_uses_twilios_default() -> None:
    root = parse(say_and_hang_up("Goodbye."))
    assert root[0].attrib == {}


def test_hang_up() -> None:
    assert [child.tag for child in parse(hang_up())] == ["Hangup"]
