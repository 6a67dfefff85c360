"""The provider adapters: the latency each adds between its provider's bytes and what it hands on, and the
CPU each costs per call-minute, on the real codec path; and knowledge-base retrieval time.

Every adapter runs its real client against the project's test double of its provider: Transcribe's SDK
client (serializers, per-event SigV4 signing, event-stream coding) over the in-process LocalTranscribe
transport; boto3's Polly and Bedrock Runtime clients and the openai client over HTTP against the local
servers of tests/support. The HTTP doubles run in a child process (`python -m bench.providers serve
<kind>`), so the CPU measured here is the adapters' and not the doubles', and they answer from the other
core as a provider would. They record when they hand each chunk or event to the socket, with
time.perf_counter: CLOCK_MONOTONIC on Linux, one clock for both processes.

Added latency (ms; `*_p50`, `*_p95`):
- polly `chunk_added_ms`: from the stub writing a chunk of audio (100 ms of PCM, one every 10 ms) to the
  adapter's chunk that completes it leaving the μ-law encoder, ready to send; `first_chunk_added_ms` for
  each clause's first chunk (it also waits for botocore to return the response).
- openai, bedrock `token_added_ms`: from the server writing a token's event (80 tokens/s) to the TextDelta.
- transcribe `result_added_ms`: from the double writing a TranscriptEvent (one every 100 ms) to its
  Transcript out of session.transcripts(). `audio_wait_ms`: from a 20 ms frame given to send_audio (in
  real time) to the double decoding the AudioEvent that carries it. The 60 ms AudioEvents dominate that
  wait: a frame waits for the rest of its event. `audio_wait_after_chunk_ms` is the wait of the frame that
  completes an event: the adapter's own part (buffering, signing, coding).
- espeak `first_chunk_ms`: from asking for a clause to its first chunk of audio.

`cpu_s_per_call_minute`: time.process_time of this whole process (every thread) while several calls' worth
of work (`calls`) runs at once, divided by the call-minutes done. A call-minute is 60 s of caller audio in
(3000 μ-law frames, decoded), 30 s of agent speech out (μ-law encoded) and 8 LLM replies of about 40
tokens. Transcribe's double answers a result every 200 ms of audio, every 15th final; its own decoding and
encoding runs in this process, so it is measured apart on as many events and subtracted
(`cpu_s_per_call_minute_with_double` keeps it). pocketsphinx decodes 60 s of eSpeak speech (caller
sentences and pauses) from a warm decoder (loading one takes 0.25-0.4 s, once per concurrent session in a
process's life); `real_time_factor` is its wall time over the audio's. The TTS runs are normalised by the
audio they actually produced.

knowledge: KnowledgeBase.search per caller question, on the clinic agent's knowledge base and on a
synthetic one of 500 passages: wall-clock `*_ms_p50`/`*_ms_p99` and this thread's CPU `*_cpu_ms_*`.
"""

import asyncio
import contextlib
import functools
import json
import os
import random
import re
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
from smithy_aws_event_stream.events import EventMessage
from smithy_core import URI
from smithy_http import tuples_to_fields
from smithy_http.aio import HTTPRequest

from bench.latency import percentile
from streaming.audio import codec, synth
from streaming.knowledge import KnowledgeBase, Passage, passages_of
from streaming.providers.base import LanguageModel, TextDelta
from streaming.providers.simulated import speech_ms
from streaming.providers.transcribe import TranscribeSettings, TranscribeSpeechToText
from switchboard.agent import AgentConfig, AgentDirectory, Voice
from switchboard.state import ChatMessage
from switchboard.tool_actions import tool_schemas
from tests.support.deployment import REPO, environment
from tests.support.transcribe_server import LocalStream, LocalTranscribe, event_message, wire_result

REGION: Final = "us-east-1"
FAKE_AWS: Final = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_SESSION_TOKEN": "bench",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
CALLS: Final = 10  # calls at once in the CPU runs
FRAMES_PER_MINUTE: Final = 3000
# The Transcribe adapter's AudioEvent, in 20 ms frames.
CHUNK_FRAMES: Final = TranscribeSettings().chunk_ms // codec.FRAME_MS
RESULT_EVERY_CHUNKS: Final = 2  # Transcribe's double: a result every 200 ms of audio...
FINAL_EVERY_RESULTS: Final = 15  # ...every 15th of them final
AGENT_SPEECH_S_PER_MINUTE: Final = 30.0
REPLIES_PER_MINUTE: Final = 8
TOKEN_INTERVAL_S: Final = 1 / 80  # GUIDE.md's reference LLM: 80 tokens/s
POLLY_CHUNK_BYTES: Final = 1600  # 100 ms of PCM16 at 8 kHz
POLLY_CHUNK_INTERVAL_S: Final = 0.01  # ten times real time
LATENCY_CLAUSES: Final = 24
LATENCY_REPLIES: Final = 12
BEDROCK_MODEL: Final = "anthropic.claude-3-5-haiku-20241022-v1:0"

# What the agent says: eight replies of about 40 tokens each (tokens as the doubles stream them).
REPLIES: Final = (
    "Of course, I can book you in for a check-up next week. Which day would suit you best, and may I "
    "have your full name and the reason for the visit, please?",
    "We are open Monday to Wednesday from eight thirty to five thirty, on Thursday until seven in the "
    "evening, and on Friday until four. We are closed on weekends.",
    "I have Tuesday at ten in the morning or Thursday at five in the afternoon with Doctor Patel. Which "
    "of those two would you prefer?",
    "You're booked for Tuesday at ten in the morning with Doctor Patel. Would you like me to send you a "
    "text message to confirm it?",
    "Parking is free in the lot behind the clinic on Maple Street for two hours, and there is a bus stop "
    "right outside the main door.",
    "Please bring your insurance card and a list of the medicines you take. Try to arrive ten minutes "
    "early so you can fill in the forms.",
    "I'm not sure about that one, I'm afraid. Would you like me to put you through to the front desk, so "
    "they can answer it for you?",
    "I've sent you a text message with the details of your appointment on Tuesday morning. Is there "
    "anything else I can help you with today?",
)
# What a caller says, for pocketsphinx to hear (synthesized by eSpeak).
CALLER_SENTENCES: Final = (
    "Hello, I would like to book an appointment for a check up.",
    "Do you have anything on Tuesday morning?",
    "My name is Sam Taylor.",
    "What time do you open on Friday?",
    "Can I park near the clinic?",
    "Yes please, send me a text message to confirm.",
    "I need to see a doctor about my back.",
    "Thursday afternoon would be better for me.",
    "That is all, thank you very much. Goodbye.",
)
# What callers ask a clinic's knowledge base.
QUESTIONS: Final = (
    "What time do you open on Saturday?",
    "Are you open on the weekend?",
    "Where can I park?",
    "Is there parking near the clinic?",
    "Do you take Blue Cross insurance?",
    "How much does a flu shot cost?",
    "Can I get my kids vaccinated there?",
    "What should I bring to my first appointment?",
    "Do you do blood tests on site?",
    "How do I cancel my appointment?",
    "Is there a fee if I miss an appointment?",
    "Which doctors are taking new patients?",
    "Can I get a prescription refilled over the phone?",
    "Do you have a pharmacy in the building?",
    "How long does it take to get test results back?",
    "Are you open late on Thursdays?",
    "Can I see a nurse without an appointment?",
    "Do you offer physical therapy for back pain?",
    "What's your address?",
    "Is the clinic wheelchair accessible?",
    "Do you speak Spanish?",
    "How do I get my medical records?",
    "Can I pay with a credit card?",
    "Um, yeah, I was just wondering what your hours are tomorrow",
)


def _ms(values: Sequence[float], *quantiles: int) -> dict[str, float]:
    """`values` in seconds as ms at each quantile, rounded: {"p50": ..., "p95": ...}."""
    return {f"p{q}": round(percentile([value * 1000 for value in values], q), 3) for q in quantiles}


async def _cpu(work: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """CPU seconds of the whole process (every thread) and wall seconds while `work` runs."""
    cpu, wall = time.process_time(), time.perf_counter()
    await work()
    return time.process_time() - cpu, time.perf_counter() - wall


def _covering(ends: Sequence[int], position: int) -> int:
    """The index of the first piece whose cumulative end (`ends`, ascending) reaches `position`."""
    return int(np.searchsorted(np.asarray(ends), position, side="left"))


@functools.cache
def _clinic() -> AgentConfig:
    agent = AgentDirectory.load(REPO / "agents").get("clinic-receptionist")
    assert agent is not None, "the shipped clinic agent is missing"
    return agent


# -- the HTTP doubles, in a child process --------------------------------------------------------------------


class _Double:
    """A provider's test double served by a child process; `ask` configures it or fetches its records."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.url = ""
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> "_Double":
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(["layers", ".", os.environ.get("PYTHONPATH", "")])}
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.providers",
            "serve",
            self.kind,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        self.url = str((await self._line())["url"])
        return self

    async def _line(self) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.kind} double stopped (exit {await self._process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, **command: Any) -> Any:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        await self._process.stdin.drain()
        return (await self._line())["answer"]

    async def __aexit__(self, *_: object) -> None:
        process = self._process
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


async def _serve(kind: str) -> None:
    """The child: serve `kind`'s double on 127.0.0.1, answer commands (JSON lines) until stdin closes."""
    # Protocol lines go to the real stdout; anything else the double prints goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    loop = asyncio.get_running_loop()

    def say(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")

    async def commands(handle: Callable[[dict[str, Any]], Any]) -> None:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            say({"answer": handle(json.loads(line))})

    if kind == "polly":
        from tests.support.polly_stub import Pacing, running_polly_stub

        with running_polly_stub() as stub:

            def polly(command: dict[str, Any]) -> Any:
                if "pacing" in command:
                    stub.pacing = Pacing(**command["pacing"])
                    return None
                records = [[[at, size] for at, size in request.chunks] for request in stub.speech]
                stub.speech.clear()
                return records

            say({"url": stub.url})
            await commands(polly)
    elif kind == "openai":
        from tests.support.openai_server import Completion, running_openai_server

        async with running_openai_server() as openai_server:

            def openai(command: dict[str, Any]) -> Any:
                if "interval_s" in command:
                    interval = float(command["interval_s"])

                    def answer(_: dict[str, Any]) -> Completion:
                        # The replies in turn; exchanges is the count of requests so far, this one included.
                        return Completion(
                            REPLIES[(len(openai_server.exchanges) - 1) % len(REPLIES)], token_interval_s=interval
                        )

                    openai_server.answer_with(answer)
                    return None
                records = [exchange.written for exchange in openai_server.exchanges]
                openai_server.exchanges.clear()
                return records

            say({"url": openai_server.url})
            await commands(openai)
    elif kind == "bedrock":
        from tests.support.bedrock_server import Converse, running_bedrock_server

        async with running_bedrock_server() as bedrock_server:

            def bedrock(command: dict[str, Any]) -> Any:
                if "interval_s" in command:
                    interval = float(command["interval_s"])
                    replies = [REPLIES[index % len(REPLIES)] for index in range(int(command["count"]))]
                    bedrock_server.enqueue(*(Converse(text, interval_s=interval) for text in replies))
                    return None
                records = [exchange.written for exchange in bedrock_server.exchanges]
                bedrock_server.exchanges.clear()
                return records

            say({"url": bedrock_server.url})
            await commands(bedrock)
    else:
        raise SystemExit(f"unknown double {kind!r}")


# -- Transcribe ---------------------------------------------------------------------------------------------


def _caller_ulaw(frames: int, seed: int) -> list[bytes]:
    """`frames` 20 ms frames of speech-like μ-law, as Twilio sends them."""
    pcm = synth.voiced(frames * codec.FRAME_MS, seed=seed).astype("<i2").tobytes()
    ulaw = codec.pcm16_to_ulaw(pcm)
    size = codec.FRAME_BYTES_ULAW
    return [ulaw[offset : offset + size] for offset in range(0, len(ulaw), size)][:frames]


def _result(index: int, end_s: float) -> dict[str, Any]:
    """The double's index-th result, ending at `end_s` of the stream: partials growing, every 15th final."""
    words = ["I", "would", "like", "to", "book", "an", "appointment", "on", "Tuesday", "morning", "please"]
    position = index % FINAL_EVERY_RESULTS
    count = 2 + position * (len(words) - 2) // (FINAL_EVERY_RESULTS - 1)
    final = position == FINAL_EVERY_RESULTS - 1
    text = " ".join(words[:count]) + ("." if final else "")
    segment = index // FINAL_EVERY_RESULTS
    return wire_result(
        f"r{segment}", text, max(0.0, end_s - 1.5), end_s, partial=not final, stable=count if final else count - 1
    )


async def _transcribe_latency(stt: TranscribeSpeechToText, local: LocalTranscribe, seconds: float) -> dict[str, Any]:
    """One session in real time: 20 ms frames in, a result every 100 ms out."""
    session = await stt.start(language="en-US")
    stream = await local.stream(len(local.streams) - 1)
    arrived: list[float] = []

    async def read() -> None:
        async for _ in session.transcripts():
            arrived.append(time.perf_counter())

    reader = asyncio.create_task(read())
    frames = _caller_ulaw(round(seconds * 1000 / codec.FRAME_MS), seed=11)
    given: list[float] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = 0
    for index, ulaw in enumerate(frames):
        await asyncio.sleep(max(0.0, started + index * codec.FRAME_MS / 1000 - loop.time()))
        pcm = codec.ulaw_to_pcm16(ulaw)
        given.append(time.perf_counter())
        await session.send_audio(pcm)
        if index % CHUNK_FRAMES == CHUNK_FRAMES - 1:
            # Between audio events, as Transcribe answers: not in step with the client's writes.
            loop.call_later(0.05, stream.results, _result(results, (index + 1) * codec.FRAME_MS / 1000))
            results += 1
    await asyncio.sleep(0.2)
    await session.aclose()
    await reader
    written = stream.answers_written
    added = [arrived[index] - written[index] for index in range(min(len(arrived), len(written)))]
    if len(arrived) != results or len(written) != results:
        raise RuntimeError(f"Transcribe: {results} results sent, {len(written)} written, {len(arrived)} out")
    frame_ends = [(index + 1) * codec.FRAME_BYTES_PCM for index in range(len(given))]
    event_ends = list(np.cumsum([len(event) for event in stream.audio_events]))
    waits = [stream.audio_arrivals[_covering(event_ends, end)] - at for end, at in zip(frame_ends, given, strict=True)]
    completing = waits[CHUNK_FRAMES - 1 :: CHUNK_FRAMES]
    result_ms = _ms(added, 50, 95)
    wait_ms = _ms(waits, 50, 95)
    after_chunk_ms = _ms(completing, 50, 95)
    return {
        "result_added_ms_p50": result_ms["p50"],
        "result_added_ms_p95": result_ms["p95"],
        "results": len(added),
        "audio_wait_ms_p50": wait_ms["p50"],
        "audio_wait_ms_p95": wait_ms["p95"],
        "audio_event_ms": CHUNK_FRAMES * codec.FRAME_MS,
        "audio_wait_after_chunk_ms_p50": after_chunk_ms["p50"],
        "audio_wait_after_chunk_ms_p95": after_chunk_ms["p95"],
        "frames": len(waits),
    }


async def _transcribe_call(stt: TranscribeSpeechToText, local: LocalTranscribe, frames: list[bytes]) -> None:
    """One call-minute of caller audio as fast as the double takes it, its results read as they come."""
    session = await stt.start(language="en-US")
    stream = await local.stream(len(local.streams) - 1)

    async def read() -> None:
        async for _ in session.transcripts():
            pass

    reader = asyncio.create_task(read())
    results = 0
    for index, ulaw in enumerate(frames):
        await session.send_audio(codec.ulaw_to_pcm16(ulaw))
        if index % CHUNK_FRAMES == CHUNK_FRAMES - 1:
            chunks = (index + 1) // CHUNK_FRAMES
            # Backpressure: as fast as the stream takes audio, no faster (no audio dropped, no stall).

            def taken(chunks: int = chunks) -> bool:
                return len(stream.audio_events) >= chunks

            await stream.until(taken)
            if chunks % RESULT_EVERY_CHUNKS == 0:
                stream.results(_result(results, (index + 1) * codec.FRAME_MS / 1000))
                results += 1
    await session.aclose()
    await reader


async def _local_transcribe_cpu(audio_events: int, results: int) -> float:
    """CPU seconds the in-process double spends on this many audio events and results: its decoding of the
    signed event stream and its encoding of results, none of which runs in production."""
    inner = event_message(
        {":message-type": "event", ":event-type": "AudioEvent", ":content-type": "application/octet-stream"},
        bytes(CHUNK_FRAMES * codec.FRAME_BYTES_PCM),
    )
    signed: dict[str, datetime | bytes] = {":date": datetime.now(UTC), ":chunk-signature": os.urandom(32)}
    frame = EventMessage(headers=signed, payload=inner).encode()
    end = EventMessage(headers=signed, payload=b"").encode()
    body = frame * audio_events + end
    cpu = time.process_time()
    request = HTTPRequest(destination=URI(host="localhost"), method="POST", fields=tuples_to_fields([]), body=body)
    stream = LocalStream(request)
    for index in range(results):
        stream.results(_result(index, index * 0.2 + 0.2))
    async for _ in stream.body():
        pass
    await stream.close()
    cpu = time.process_time() - cpu
    if len(stream.audio_events) != audio_events:
        raise RuntimeError("the double's calibration did not decode every event")
    return cpu


async def transcribe() -> dict[str, Any]:
    local = LocalTranscribe()
    stt = await TranscribeSpeechToText.create(region=REGION, transport=local)
    try:
        numbers = await _transcribe_latency(stt, local, seconds=6.0)
        minute = _caller_ulaw(FRAMES_PER_MINUTE, seed=5)

        async def calls() -> None:
            await asyncio.gather(*(_transcribe_call(stt, local, minute) for _ in range(CALLS)))

        streams_before = len(local.streams)
        cpu, wall = await _cpu(calls)
        streams = local.streams[streams_before:]
        events = sum(len(stream.audio_events) for stream in streams)
        results = sum(len(stream.answers_written) for stream in streams)
        if len(streams) != CALLS or events != CALLS * FRAMES_PER_MINUTE // CHUNK_FRAMES:
            raise RuntimeError(f"Transcribe: {len(streams)} streams, {events} audio events (a stream was replaced)")
        double = await _local_transcribe_cpu(events, results)
    finally:
        await stt.aclose()
        await local.close()
    return numbers | {
        "cpu_s_per_call_minute": round((cpu - double) / CALLS, 4),
        "cpu_s_per_call_minute_with_double": round(cpu / CALLS, 4),
        "calls": CALLS,
        "cpu_wall_s": round(wall, 2),
    }


# -- Polly -----------------------------------------------------------------------------------------------------


def _clauses() -> list[str]:
    """The replies cut where the engine hands text to TTS: clauses and sentences."""
    return [clause for reply in REPLIES for clause in re.split(r"(?<=[.,?!])\s+", reply)]


def _speech(seconds: float, duration: Callable[[str], float]) -> list[str]:
    """The replies' clauses in turn until they last `seconds` by `duration`."""
    clauses = _clauses()
    chosen: list[str] = []
    total = 0.0
    while total < seconds:
        clause = clauses[len(chosen) % len(clauses)]
        chosen.append(clause)
        total += duration(clause)
    return chosen


async def _speak(
    synthesize: Callable[[str], AsyncGenerator[bytes]], text: str, out: list[tuple[float, int]] | None = None
) -> int:
    """`text` through a TTS adapter and the μ-law encoder: the PCM bytes it gave. `out` gets, per chunk,
    when it was ready to send and the PCM bytes up to its end."""
    pcm_bytes = 0
    async for pcm in synthesize(text):
        ulaw = codec.pcm16_to_ulaw(pcm)
        pcm_bytes += 2 * len(ulaw)
        if out is not None:
            out.append((time.perf_counter(), pcm_bytes))
    return pcm_bytes


async def polly() -> dict[str, Any]:
    from streaming.providers.polly import PollyTextToSpeech, polly_client

    voice = Voice(id="Joanna", engine="neural")
    pacing = {"first_byte_s": 0.0, "chunk_bytes": POLLY_CHUNK_BYTES, "interval_s": POLLY_CHUNK_INTERVAL_S}
    async with _Double("polly") as double:
        await double.ask(pacing=pacing)
        tts = PollyTextToSpeech(polly_client(REGION, endpoint_url=double.url))

        def synthesize(text: str) -> AsyncGenerator[bytes]:
            return tts.synthesize(text, voice=voice, language="en-US")

        try:
            await _speak(synthesize, "Warming up the connection.")
            await double.ask(records=True)
            outputs: list[list[tuple[float, int]]] = []
            for clause in (_clauses() * 2)[:LATENCY_CLAUSES]:
                outputs.append([])
                await _speak(synthesize, clause, outputs[-1])
            records = await double.ask(records=True)
            added: list[float] = []
            first: list[float] = []
            for chunks, out in zip(records, outputs, strict=True):
                out_ends = [size for _, size in out]
                written = 0
                for index, (at, size) in enumerate(chunks):
                    written += size
                    delay = out[_covering(out_ends, written)][0] - at
                    added.append(delay)
                    if index == 0:
                        first.append(delay)
            per_call = _speech(AGENT_SPEECH_S_PER_MINUTE, lambda text: speech_ms(text) / 1000)
            spoken = 0

            async def call() -> None:
                nonlocal spoken
                for clause in per_call:
                    said = await _speak(synthesize, clause)
                    spoken += said  # not `+= await`: that would read the total before the await

            async def calls() -> None:
                await asyncio.gather(*(call() for _ in range(CALLS)))

            cpu, wall = await _cpu(calls)
        finally:
            await tts.aclose()
    minutes = spoken / (2 * codec.SAMPLE_RATE) / AGENT_SPEECH_S_PER_MINUTE
    added_ms, first_ms = _ms(added, 50, 95), _ms(first, 50, 95)
    return {
        "chunk_added_ms_p50": added_ms["p50"],
        "chunk_added_ms_p95": added_ms["p95"],
        "first_chunk_added_ms_p50": first_ms["p50"],
        "first_chunk_added_ms_p95": first_ms["p95"],
        "chunks": len(added),
        "clauses": len(first),
        "cpu_s_per_call_minute": round(cpu / minutes, 4),
        "calls": CALLS,
        "cpu_wall_s": round(wall, 2),
    }


# -- the language models ---------------------------------------------------------------------------------------


def _history(agent: AgentConfig, turn: int) -> list[ChatMessage]:
    """A call's history before its `turn`-th reply: the prompt, the greeting, earlier turns, the caller."""
    messages = [
        ChatMessage(role="system", content=agent.system_prompt),
        ChatMessage(role="assistant", content=agent.greeting),
    ]
    for earlier in range(turn):
        messages.append(ChatMessage(role="user", content=CALLER_SENTENCES[earlier % len(CALLER_SENTENCES)]))
        messages.append(ChatMessage(role="assistant", content=REPLIES[earlier % len(REPLIES)]))
    messages.append(ChatMessage(role="user", content=CALLER_SENTENCES[turn % len(CALLER_SENTENCES)]))
    return messages


async def _language_model(kind: str) -> dict[str, Any]:
    agent = _clinic()
    tools = tool_schemas(agent)
    async with _Double(kind) as double, contextlib.AsyncExitStack() as stack:
        llm: LanguageModel
        if kind == "openai":
            from streaming.providers.openai_llm import OpenAILanguageModel, openai_client

            client = openai_client("sk-bench", base_url=double.url)
            stack.push_async_callback(client.close)
            llm = OpenAILanguageModel(client, agent.llm)
        else:
            from streaming.providers.bedrock import BedrockLanguageModel, bedrock_runtime_client

            bedrock = bedrock_runtime_client(REGION, endpoint_url=double.url)
            stack.callback(bedrock.close)
            llm = BedrockLanguageModel(
                bedrock, agent.llm.model_copy(update={"provider": "bedrock", "model": BEDROCK_MODEL})
            )

        async def reply(turn: int, out: list[float] | None = None) -> int:
            deltas = 0
            async for event in llm.reply(_history(agent, turn), tools):
                if isinstance(event, TextDelta):
                    deltas += 1
                    if out is not None:
                        out.append(time.perf_counter())
            return deltas

        await double.ask(interval_s=TOKEN_INTERVAL_S, count=1 + LATENCY_REPLIES)
        await reply(0)  # the first request opens the connection
        await double.ask(records=True)
        handed: list[list[float]] = []
        for turn in range(LATENCY_REPLIES):
            handed.append([])
            await reply(turn % REPLIES_PER_MINUTE, handed[-1])
        records = await double.ask(records=True)
        added: list[float] = []
        for written, out in zip(records, handed, strict=True):
            # Event 0 is the role chunk (OpenAI) or messageStart (Bedrock), then one event per token, then
            # three more (finish, usage, [DONE]; contentBlockStop, messageStop, metadata).
            if len(written) != len(out) + 4:
                raise RuntimeError(f"{kind}: {len(written)} events written for {len(out)} text deltas")
            added.extend(at - written[index + 1] for index, at in enumerate(out))

        await double.ask(interval_s=TOKEN_INTERVAL_S, count=CALLS * REPLIES_PER_MINUTE)
        tokens_out = 0

        async def call() -> None:
            nonlocal tokens_out
            for turn in range(REPLIES_PER_MINUTE):
                deltas = await reply(turn)
                tokens_out += deltas  # not `+= await`: that would read the total before the await

        async def calls() -> None:
            await asyncio.gather(*(call() for _ in range(CALLS)))

        cpu, wall = await _cpu(calls)
    added_ms = _ms(added, 50, 95)
    return {
        "token_added_ms_p50": added_ms["p50"],
        "token_added_ms_p95": added_ms["p95"],
        "tokens": len(added),
        "tokens_per_reply": round(tokens_out / (CALLS * REPLIES_PER_MINUTE), 1),
        "cpu_s_per_call_minute": round(cpu / CALLS, 4),
        "calls": CALLS,
        "cpu_wall_s": round(wall, 2),
    }


# -- the offline engines ---------------------------------------------------------------------------------------


async def pocketsphinx() -> dict[str, Any]:
    from streaming.providers.espeak import speech_8khz
    from streaming.providers.pocketsphinx import PocketsphinxSpeechToText

    minute = FRAMES_PER_MINUTE * codec.FRAME_BYTES_PCM
    pause = bytes(int(0.8 * codec.SAMPLE_RATE) * 2)
    speech = b""
    for index in range(1000):
        sentence = speech_8khz(CALLER_SENTENCES[index % len(CALLER_SENTENCES)], "en-us", words_per_minute=140)
        if len(speech) + len(sentence) + len(pause) > minute:
            break
        speech += sentence + pause
    # The minute ends in a pause, as a caller's turn does. (Closing a session mid-word with no audio pending
    # makes pocketsphinx's Endpointer.end_stream(b"") raise IndexError, which fails the session.)
    ulaw = codec.pcm16_to_ulaw(speech + bytes(minute - len(speech)))
    frames = [ulaw[offset : offset + codec.FRAME_BYTES_ULAW] for offset in range(0, len(ulaw), codec.FRAME_BYTES_ULAW)]
    stt = PocketsphinxSpeechToText()
    warm = await stt.start(language="en-US")  # a decoder in the pool, as after the first call
    await warm.aclose()
    finals: list[str] = []

    async def call() -> None:
        session = await stt.start(language="en-US")

        async def read() -> None:
            async for transcript in session.transcripts():
                if transcript.is_final:
                    finals.append(transcript.text)

        reader = asyncio.create_task(read())
        for frame in frames:
            await session.send_audio(codec.ulaw_to_pcm16(frame))
        await session.aclose()
        await reader

    cpu, wall = await _cpu(call)
    return {
        "cpu_s_per_call_minute": round(cpu, 3),
        "real_time_factor": round(wall / (len(frames) * codec.FRAME_MS / 1000), 3),
        "utterances": len(finals),
        "words_heard": sum(len(text.split()) for text in finals),
    }


async def espeak() -> dict[str, Any]:
    from streaming.providers.espeak import EspeakTextToSpeech

    tts = EspeakTextToSpeech()
    voice = Voice(provider="espeak", id="en-us")

    def synthesize(text: str) -> AsyncGenerator[bytes]:
        return tts.synthesize(text, voice=voice, language="en-US")

    await _speak(synthesize, "Warming up.")
    first: list[float] = []
    clauses = _clauses()
    for clause in (clauses * 2)[: LATENCY_CLAUSES * 2]:
        started = time.perf_counter()
        chunks = synthesize(clause)
        await anext(chunks)
        first.append(time.perf_counter() - started)
        await chunks.aclose()
    spoken = 0

    async def call_minutes() -> None:
        nonlocal spoken
        # eSpeak speaks one text at a time for the whole process: calls at once would only queue.
        while spoken < CALLS * AGENT_SPEECH_S_PER_MINUTE * 2 * codec.SAMPLE_RATE:
            for clause in clauses:
                said = await _speak(synthesize, clause)
                spoken += said

    cpu, wall = await _cpu(call_minutes)
    minutes = spoken / (2 * codec.SAMPLE_RATE) / AGENT_SPEECH_S_PER_MINUTE
    first_ms = _ms(first, 50, 95)
    return {
        "first_chunk_ms_p50": first_ms["p50"],
        "first_chunk_ms_p95": first_ms["p95"],
        "clauses": len(first),
        "cpu_s_per_call_minute": round(cpu / minutes, 4),
        "real_time_factor": round(wall / (minutes * AGENT_SPEECH_S_PER_MINUTE), 4),
    }


# -- knowledge ---------------------------------------------------------------------------------------------------


def synthetic_passages(count: int = 500, seed: int = 3) -> list[Passage]:
    """`count` passages of a large clinic group's knowledge base: services, doctors, sites, policies."""
    rng = random.Random(seed)
    sites = ["Maple Street", "Riverside", "Oak Park", "Harbor View", "Hillcrest", "Lakeside", "Elm Grove"]
    services = [
        "flu vaccination", "blood tests", "physical therapy", "x-rays", "travel vaccines", "prenatal care",
        "allergy testing", "diabetes checks", "skin checks", "hearing tests", "eye exams", "sports physicals",
        "counselling", "nutrition advice", "minor surgery", "wound care", "sleep studies", "ultrasound",
    ]  # fmt: skip
    insurers = ["Blue Cross", "Aetna", "Cigna", "UnitedHealthcare", "Medicare", "Medicaid", "Kaiser", "Humana"]
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    doctors = ["Patel", "Nguyen", "Garcia", "Smith", "Okafor", "Kowalski", "Haddad", "Larsen", "Moreau", "Tanaka"]
    templates = [
        (
            "Opening hours",
            "The {site} clinic offers {service} {day} to {day2} from {open} to {close}. Walk-ins are welcome "
            "before noon; otherwise book by phone or online. Please arrive ten minutes early.",
        ),
        (
            "Prices and insurance",
            "{service} costs {price} dollars without insurance. We accept {insurer} and {insurer2}; bring your "
            "card and photo identification. Payment by credit card, debit card or cash at the front desk.",
        ),
        (
            "Doctors",
            "Doctor {doctor} sees patients at {site} on {day} and {day2} and is {taking} new patients. "
            "Appointments last twenty minutes; longer visits for {service} can be booked on request.",
        ),
        (
            "Parking and access",
            "Parking at {site}: the lot behind the building is free for patients for two hours. There is a bus "
            "stop outside the main entrance and the building is wheelchair accessible with a lift to every floor.",
        ),
        (
            "Cancellations",
            "To cancel or move an appointment for {service}, call at least twenty-four hours ahead. A missed "
            "appointment without notice is charged {price} dollars. Reminders are sent by text the day before.",
        ),
        (
            "Test results",
            "Results of {service} are usually ready within {n} working days. Doctor {doctor}'s team calls you "
            "if anything needs follow-up; you can also ask the front desk at {site}.",
        ),
        (
            "Pharmacy",
            "The pharmacy at {site} fills prescriptions {day} to {day2} until {close}. Repeat prescriptions can "
            "be requested by phone and are ready in {n} days. Bring your insurance card from {insurer}.",
        ),
        (
            "Records and languages",
            "Medical records from {site} are released within {n} days of a signed request. Interpreters in "
            "Spanish, Vietnamese and Polish are available for {service} if you ask when booking.",
        ),
    ]
    passages = []
    for index in range(count):
        topic, template = templates[index % len(templates)]
        day = rng.randrange(5)
        site = rng.choice(sites)
        text = template.format(
            site=site,
            service=rng.choice(services),
            day=days[day],
            day2=days[min(6, day + rng.randrange(1, 4))],
            open=f"{rng.choice([7, 8, 9])} am",
            close=f"{rng.choice([4, 5, 6, 7])} pm",
            price=rng.choice([25, 40, 60, 85, 120, 150]),
            insurer=rng.choice(insurers),
            insurer2=rng.choice(insurers),
            doctor=rng.choice(doctors),
            taking=rng.choice(["taking", "not taking"]),
            n=rng.randrange(2, 8),
        )
        passages.extend(passages_of("synthetic.md", f"## {topic}, {site}\n{text}\n"))
    return passages


def _search_times(knowledge: KnowledgeBase, rounds: int = 25) -> tuple[list[float], list[float]]:
    """Wall and CPU (this thread's) seconds of each search: every question, `rounds` times."""
    for question in QUESTIONS:
        knowledge.search(question)  # first searches pay for lazy setup: not what a call sees
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(rounds):
        for question in QUESTIONS:
            started, started_cpu = time.perf_counter(), time.thread_time()
            knowledge.search(question)
            cpu.append(time.thread_time() - started_cpu)
            wall.append(time.perf_counter() - started)
    return wall, cpu


def knowledge() -> dict[str, Any]:
    """Search time on the clinic's knowledge base and on a synthetic one of 500 passages. The wall-clock p99
    also counts the moments the OS gave the core to another process; the CPU time does not."""
    results: dict[str, Any] = {"questions": len(QUESTIONS)}
    for name, base in (
        ("clinic", KnowledgeBase.of_files(_clinic().knowledge_base)),
        ("synthetic_500", KnowledgeBase(synthetic_passages())),
    ):
        wall, cpu = _search_times(base)
        wall_ms, cpu_ms = _ms(wall, 50, 99), _ms(cpu, 50, 99)
        results |= {
            f"{name}_ms_p50": wall_ms["p50"],
            f"{name}_ms_p99": wall_ms["p99"],
            f"{name}_cpu_ms_p50": cpu_ms["p50"],
            f"{name}_cpu_ms_p99": cpu_ms["p99"],
            f"{name}_passages": len(base.passages),
        }
    return results


async def measure() -> dict[str, Any]:
    # Other work on the machine shows in the wall-clock tails: say how busy it was.
    results: dict[str, Any] = {"load_average_1m_at_start": round(os.getloadavg()[0], 2)}
    for name, section in (
        ("transcribe", transcribe),
        ("polly", polly),
        ("openai", lambda: _language_model("openai")),
        ("bedrock", lambda: _language_model("bedrock")),
        ("pocketsphinx", pocketsphinx),
        ("espeak", espeak),
    ):
        started = time.perf_counter()
        results[name] = await section()
        print(f"    {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    results["knowledge"] = knowledge()
    results["assumptions"] = {
        "call_minute": "60 s of caller audio in (3000 μ-law frames), 30 s of agent speech out, 8 LLM replies",
        "calls_at_once": CALLS,
        "transcribe_results": f"one every {RESULT_EVERY_CHUNKS * 100} ms of audio, every {FINAL_EVERY_RESULTS}th final",
        "polly_stream": f"{POLLY_CHUNK_BYTES} bytes (100 ms) a chunk, {POLLY_CHUNK_INTERVAL_S * 1000:.0f} ms apart",
        "llm_stream": f"{1 / TOKEN_INTERVAL_S:.0f} tokens/s",
    }
    return results


def run() -> dict[str, Any]:
    with environment(FAKE_AWS):
        return asyncio.run(measure())


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(_serve(sys.argv[2]))
    else:
        print(json.dumps(run(), indent=2))
