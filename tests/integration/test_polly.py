"""PollyTextToSpeech with the real boto3 client: against a local Polly (tests/support/polly_stub.py) that
streams chunked audio, throttles and breaks off, and against moto."""

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import boto3
import botocore.credentials
import botocore.session
import pytest
from botocore.config import Config
from moto import mock_aws

from streaming.providers.polly import (
    MAX_SSML_CHARS,
    PollyError,
    PollyTextToSpeech,
    PollyThrottled,
    RetryPolicy,
    VoiceCheckError,
    polly_client,
)
from switchboard.agent import AgentConfig, Voice
from tests.support.moto_server import running_moto_thread
from tests.support.polly_stub import BreakOff, Fail, Hold, Pacing, PollyStub, running_polly_stub

JOANNA = Voice(id="Joanna")
# Tiny waits, so the tests count attempts rather than wait; a budget no test run reaches.
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.001, max_delay_s=0.005, budget_s=60.0)
TEXT = "Your appointment is on Tuesday at nine."


def _agent(agent_id: str, voice: dict[str, str], language: str = "en-US") -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "id": agent_id,
            "name": agent_id,
            "directions": ["inbound"],
            "language": language,
            "voice": voice,
            "greeting": "Hello.",
            "system_prompt": "Be brief.",
            "phone_numbers": ["+15550100200"],
        }
    )


async def _say(tts: PollyTextToSpeech, text: str, voice: Voice = JOANNA, language: str = "en-US") -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text, voice=voice, language=language)]


async def _closed_by_client(stub: PollyStub) -> bool:
    return await asyncio.to_thread(stub.client_closed.wait, 30)


@pytest.fixture
def stub() -> Iterator[PollyStub]:
    with running_polly_stub() as running:
        yield running


@pytest.fixture
async def polly(stub: PollyStub, aws_env: None) -> AsyncIterator[PollyTextToSpeech]:
    tts = PollyTextToSpeech(polly_client("us-east-1", endpoint_url=stub.url), retry=FAST_RETRY)
    yield tts
    await tts.aclose()


# -- requests and audio ---------------------------------------------------------------------------------


async def test_one_ssml_request_gives_polly_s_pcm(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    chunks = await _say(polly, TEXT)
    [request] = stub.speech
    assert request.body == {
        "Engine": "neural",
        "OutputFormat": "pcm",
        "SampleRate": "8000",
        "Text": f"<speak>{TEXT}</speak>",
        "TextType": "ssml",
        "VoiceId": "Joanna",
    }
    assert request.status == 200
    assert b"".join(chunks) == stub.audio_for(TEXT)
    assert len(chunks) > 1, "the audio comes in the stub's chunks, not as one read"


async def test_markup_and_quotes_in_the_llm_s_text_are_said_not_parsed(
    polly: PollyTextToSpeech, stub: PollyStub
) -> None:
    text = """Tom & Jerry's "special" costs < $5 <break time="10s"/>."""
    chunks = await _say(polly, text)
    [request] = stub.speech
    assert request.status == 200, "the stub parses the SSML as Polly does"
    assert request.spoken == text
    assert "&amp;" in request.ssml
    assert "&lt;break time=&quot;10s&quot;/&gt;" in request.ssml
    assert "&apos;" in request.ssml
    assert b"".join(chunks) == stub.audio_for(text)


async def test_text_over_polly_s_limit_is_several_requests(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    text = " ".join(f"Item {index} is ready & waiting for you." for index in range(100))
    chunks = await _say(polly, text)
    assert len(text) > MAX_SSML_CHARS
    assert len(stub.speech) >= 2
    assert all(request.status == 200 and len(request.ssml) <= MAX_SSML_CHARS for request in stub.speech)
    assert all(request.spoken.endswith("waiting for you.") for request in stub.speech)
    assert " ".join(request.spoken for request in stub.speech) == text
    assert b"".join(chunks) == b"".join(stub.audio_for(request.spoken) for request in stub.speech)


async def test_sentences_reuse_one_connection(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    for text in (TEXT, "Is there anything else?", "Goodbye."):
        assert b"".join(await _say(polly, text)) == stub.audio_for(text)
    # Each response read to its end goes back to the pool: no new connection (TLS, in Polly's case) per sentence.
    assert len({request.client_port for request in stub.speech}) == 1


async def test_blank_text_asks_polly_nothing(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    assert await _say(polly, "  \n") == []
    assert stub.speech == []


async def test_audio_is_forwarded_as_it_arrives(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    stub.queue(Hold(after_bytes=1600))
    stream = polly.synthesize(TEXT, voice=JOANNA, language="en-US")
    first = await anext(stream)
    # The stub is still holding the rest of the body: this chunk left the adapter before Polly finished.
    [request] = stub.speech
    assert request.bytes_sent == 1600 < request.audio_bytes
    assert first == stub.audio_for(TEXT)[: len(first)]
    stub.release()
    rest = [chunk async for chunk in stream]
    assert first + b"".join(rest) == stub.audio_for(TEXT)


async def test_chunks_are_whole_samples_when_reads_end_mid_sample(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    stub.pacing = Pacing(chunk_bytes=333)
    stub.queue(Hold(after_bytes=333))
    stream = polly.synthesize(TEXT, voice=JOANNA, language="en-US")
    first = await anext(stream)
    assert len(first) <= 332, "333 bytes arrived: the odd one waits for its partner"
    stub.release()
    chunks = [first, *[chunk async for chunk in stream]]
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    assert b"".join(chunks) == stub.audio_for(TEXT)


async def test_a_bilingual_voice_is_told_its_language(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    aditi = Voice(id="Aditi", engine="standard")
    await polly.check_voices([_agent("hindi", {"id": "Aditi", "engine": "standard"}, language="hi-IN")])
    await _say(polly, "Namaste.", voice=aditi, language="hi-IN")
    await _say(polly, TEXT, voice=JOANNA, language="en-US")
    hindi, english = stub.speech
    assert hindi.body["LanguageCode"] == "hi-IN"
    assert hindi.status == 200
    assert "LanguageCode" not in english.body, "a voice's own language needs no LanguageCode"


# -- closing early --------------------------------------------------------------------------------------


async def test_closing_the_stream_mid_audio_closes_polly_s_response(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    stub.queue(Hold(after_bytes=1600))
    stream = polly.synthesize(TEXT, voice=JOANNA, language="en-US")
    await anext(stream)
    await stream.aclose()
    assert await _closed_by_client(stub)
    [request] = stub.speech
    assert request.closed_by_client
    assert request.bytes_sent == 1600


async def test_cancelling_a_read_blocked_on_polly_closes_the_response(stub: PollyStub, aws_env: None) -> None:
    # A read timeout longer than the wait below: the response must be closed by the cancellation itself,
    # not by the socket timing out.
    patient = boto3.client(
        "polly", region_name="us-east-1", endpoint_url=stub.url, config=Config(read_timeout=120, connect_timeout=5)
    )
    polly = PollyTextToSpeech(patient, retry=FAST_RETRY)
    stub.queue(Hold(after_bytes=1600))
    stream = polly.synthesize(TEXT, voice=JOANNA, language="en-US")
    received = 0
    while received < 1600:  # all the stub sends before it holds, in however many reads
        received += len(await anext(stream))
    waiting = asyncio.create_task(anext(stream))  # this read blocks: the stub is holding the rest
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await _closed_by_client(stub)
    assert stub.speech[0].closed_by_client
    # And the next sentence goes through as usual.
    assert b"".join(await _say(polly, "Anything else?")) == stub.audio_for("Anything else?")
    await polly.aclose()


# -- throttling and errors ------------------------------------------------------------------------------


async def test_throttled_requests_are_retried_until_polly_answers(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    stub.throttle_next(2)
    chunks = await _say(polly, TEXT)
    assert [request.status for request in stub.speech] == [400, 400, 200]
    assert b"".join(chunks) == stub.audio_for(TEXT)


async def test_throttling_beyond_the_attempts_is_a_clear_error(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    stub.throttle_next(10)
    with pytest.raises(PollyThrottled, match=r"failed 4 time\(s\) within the retry budget.*ThrottlingException"):
        await _say(polly, TEXT)
    assert len(stub.speech) == FAST_RETRY.max_attempts


async def test_throttling_beyond_the_time_budget_is_a_clear_error(stub: PollyStub, aws_env: None) -> None:
    no_time = RetryPolicy(max_attempts=10, base_delay_s=0.001, max_delay_s=0.001, budget_s=0.0)
    tts = PollyTextToSpeech(polly_client("us-east-1", endpoint_url=stub.url), retry=no_time)
    stub.throttle_next(3)
    try:
        with pytest.raises(PollyThrottled, match=r"budget \(0\.0 s"):
            await _say(tts, TEXT)
    finally:
        await tts.aclose()
    assert len(stub.speech) == 1


async def test_a_service_failure_is_retried(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    stub.queue(Fail(500, "ServiceFailureException", "Service failure"))
    chunks = await _say(polly, TEXT)
    assert [request.status for request in stub.speech] == [500, 200]
    assert b"".join(chunks) == stub.audio_for(TEXT)


async def test_a_refused_request_is_not_retried(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    with pytest.raises(
        PollyError, match=r"Polly refused to synthesize \(Joanna, generative\).*EngineNotSupported"
    ) as raised:
        await _say(polly, TEXT, voice=Voice(id="Joanna", engine="generative"))
    assert len(stub.speech) == 1
    assert TEXT not in str(raised.value), "the caller's conversation stays out of error messages"


async def test_an_error_mid_stream_is_a_clear_error_after_the_audio_so_far(
    polly: PollyTextToSpeech, stub: PollyStub
) -> None:
    stub.queue(BreakOff(after_bytes=1600))
    received: list[bytes] = []

    async def listen() -> None:
        async for chunk in polly.synthesize(TEXT, voice=JOANNA, language="en-US"):
            received.append(chunk)

    with pytest.raises(PollyError, match="broke off after 1600 bytes") as raised:
        await listen()
    assert b"".join(received) == stub.audio_for(TEXT)[:1600]
    assert TEXT not in str(raised.value)


async def test_polly_out_of_reach_is_a_clear_error(aws_env: None) -> None:
    with running_polly_stub() as gone:
        url = gone.url
    tts = PollyTextToSpeech(polly_client("us-east-1", endpoint_url=url), retry=FAST_RETRY)
    try:
        with pytest.raises(PollyError, match="failed 4 time"):
            await _say(tts, TEXT)
    finally:
        await tts.aclose()


# -- voices at start ------------------------------------------------------------------------------------


async def test_voices_that_support_their_engine_and_language_pass(polly: PollyTextToSpeech, stub: PollyStub) -> None:
    await polly.check_voices(
        [
            _agent("front", {"id": "Joanna"}),
            _agent("spanish", {"id": "Lucia"}, language="es-ES"),  # on the second page of the stub's voices
            _agent("british", {"id": "Amy", "engine": "generative"}),  # another accent of the agent's language
            _agent("offline", {"provider": "espeak", "id": "en-us"}),  # not Polly's to check
        ]
    )
    engines = sorted(query.get("Engine", "") for query in stub.voice_queries if "NextToken" not in query)
    assert engines == ["generative", "neural"]


async def test_a_voice_without_the_agent_s_engine_fails_the_start(polly: PollyTextToSpeech) -> None:
    with pytest.raises(VoiceCheckError) as raised:
        await polly.check_voices(
            [
                _agent("front", {"id": "Joanna", "engine": "generative"}),
                _agent("typo", {"id": "Joana"}),
                _agent("spanish", {"id": "Lucia"}),
            ]
        )
    assert str(raised.value).splitlines() == [
        "agent 'front': Joanna does not support the generative engine; it supports: neural, standard",
        "agent 'typo': Polly has no voice 'Joana'",
        "agent 'spanish': Lucia speaks es-ES, not the agent's language en-US",
    ]


async def test_voices_cannot_be_checked_without_polly(aws_env: None) -> None:
    with running_polly_stub() as gone:
        url = gone.url
    tts = PollyTextToSpeech(polly_client("us-east-1", endpoint_url=url))
    try:
        with pytest.raises(VoiceCheckError, match="cannot list Polly's voices for the neural engine"):
            await tts.check_voices([_agent("front", {"id": "Joanna"})])
    finally:
        await tts.aclose()


# -- moto -----------------------------------------------------------------------------------------------


@pytest.fixture(params=["in-process", "server"])
def moto_polly(request: pytest.FixtureRequest, aws_env: None) -> Iterator[PollyTextToSpeech]:
    """Polly as moto has it: its in-process mock, and its HTTP server."""
    if request.param == "in-process":
        with mock_aws():
            yield PollyTextToSpeech(polly_client("us-east-1"))
    else:
        with running_moto_thread() as url:
            yield PollyTextToSpeech(polly_client("us-east-1", endpoint_url=url))


async def test_moto_accepts_the_request_and_streams_its_audio(moto_polly: PollyTextToSpeech) -> None:
    try:
        chunks = await _say(moto_polly, 'Say "cheese" & smile <now>.')
    finally:
        await moto_polly.aclose()
    # moto validates OutputFormat, SampleRate, TextType and VoiceId, then answers 8 bytes of silence.
    assert b"".join(chunks) == b"\x00" * 8


async def test_moto_refuses_an_unknown_voice(moto_polly: PollyTextToSpeech) -> None:
    try:
        with pytest.raises(PollyError, match="InvalidParameterValue"):
            await _say(moto_polly, TEXT, voice=Voice(id="Nobody"))
    finally:
        await moto_polly.aclose()


async def test_moto_s_voices_check_the_engine(moto_polly: PollyTextToSpeech) -> None:
    try:
        await moto_polly.check_voices([_agent("front", {"id": "Joanna"}), _agent("long", {"id": "Danielle"})])
        with pytest.raises(
            VoiceCheckError, match=r"^agent 'front': Joanna does not support the generative engine; it supports: "
        ) as raised:
            await moto_polly.check_voices([_agent("front", {"id": "Joanna", "engine": "generative"})])
    finally:
        await moto_polly.aclose()
    assert str(raised.value).endswith("neural, standard")


# -- real Amazon Polly ----------------------------------------------------------------------------------


def _real_credentials() -> bool:
    """Credentials from the environment, the shared files or a container endpoint (not instance metadata,
    which costs a timeout at collection on a machine without it)."""
    resolver = botocore.credentials.create_credential_resolver(botocore.session.get_session())
    resolver.remove("iam-role")
    return resolver.load_credentials() is not None


@pytest.mark.aws
@pytest.mark.skipif(not _real_credentials(), reason="needs AWS credentials")
async def test_the_real_polly_checks_voices_and_streams_pcm() -> None:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    polly = PollyTextToSpeech(polly_client(region))
    try:
        await polly.check_voices([_agent("front", {"id": "Joanna"})])
        with pytest.raises(VoiceCheckError, match="Joanna does not support the long-form engine; it supports: "):
            await polly.check_voices([_agent("front", {"id": "Joanna", "engine": "long-form"})])
        chunks = await _say(polly, 'Your appointment is on Tuesday at 9 & it\'s "confirmed".')
    finally:
        await polly.aclose()
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    assert sum(map(len, chunks)) > 16_000, "more than a second of 8 kHz PCM16"
