"""The sequential baseline the latency benchmark compares the engine with, in the same run.

What a first voice bot does: audio reaches the STT in 300 ms buffers; the turn ends after a fixed
600 ms of silence (VAD); then it waits for the final transcript, then the whole LLM reply, then the whole
TTS audio, and only then sends anything. Same providers, same codec, same VAD, same server and simulator
as the engine, so the difference in the benchmark is the pipeline and nothing else. It is a benchmark
device, not a product mode: it has no barge-in, tools, state or records.
"""

import asyncio
import contextlib

from streaming.audio import codec
from streaming.audio.vad import SpeechSegmenter, SpeechStopped, default_vad
from streaming.protocol import Media, StartInfo, Stop
from streaming.providers.base import Providers, TextDelta, Transcript
from streaming.stream import MediaStream, StreamClosed
from switchboard.agent import AgentDirectory
from switchboard.state import ChatMessage

STT_BUFFER_MS = 300
FIXED_SILENCE_MS = 600


class NaiveEngine:
    def __init__(self, agents: AgentDirectory, providers: Providers) -> None:
        self.agents = agents
        self.providers = providers

    async def run(self, stream: MediaStream, start: StartInfo) -> None:
        agent = self.agents.get(start.custom_parameters["agent_id"])
        if agent is None:
            raise LookupError(f"no agent {start.custom_parameters['agent_id']!r}")
        providers = self.providers.for_call(agent, start.custom_parameters)
        stt = await providers.stt.start(language=agent.language)
        finals: asyncio.Queue[Transcript] = asyncio.Queue()
        messages = [ChatMessage(role="system", content=agent.system_prompt)]
        turns: asyncio.Queue[None] = asyncio.Queue()
        turn = 0

        async def speak(text: str) -> None:
            nonlocal turn
            turn += 1
            audio = b"".join(
                [chunk async for chunk in providers.tts.synthesize(text, voice=agent.voice, language=agent.language)]
            )
            await stream.send_mark(f"t{turn}:start")
            await stream.send_media(codec.pcm16_to_ulaw(audio))
            await stream.send_mark(f"t{turn}:end")

        async def collect_finals() -> None:
            async for transcript in stt.transcripts():
                if transcript.is_final:
                    finals.put_nowait(transcript)

        async def listen() -> None:
            segmenter = SpeechSegmenter(default_vad(), stop_ms=FIXED_SILENCE_MS)
            buffer = bytearray()
            while True:
                try:
                    message = await stream.receive()
                except StreamClosed:
                    return
                if isinstance(message, Stop):
                    return
                if not isinstance(message, Media):
                    continue
                pcm = codec.ulaw_to_pcm16(message.media.payload)
                buffer += pcm
                if len(buffer) >= STT_BUFFER_MS * 16:  # 8 kHz x 2 bytes = 16 bytes per ms
                    await stt.send_audio(bytes(buffer))
                    buffer.clear()
                for event in segmenter.feed(pcm, message.media.timestamp):
                    if isinstance(event, SpeechStopped):
                        turns.put_nowait(None)

        async def respond() -> None:
            await speak(agent.greeting)
            while True:
                await turns.get()
                # The transcript may lag the silence: wait for its final, then everything in sequence.
                transcript = await finals.get()
                messages.append(ChatMessage(role="user", content=transcript.text))
                reply = "".join(
                    [event.text async for event in providers.llm.reply(messages, []) if isinstance(event, TextDelta)]
                )
                messages.append(ChatMessage(role="assistant", content=reply))
                await speak(reply)

        async with asyncio.TaskGroup() as group:
            group.create_task(collect_finals())
            responder = group.create_task(respond())
            await listen()
            responder.cancel()
            await stt.aclose()
        with contextlib.suppress(StreamClosed):
            await stream.close()
