"""The TwiML Switchboard answers Twilio with, built only with twilio's VoiceResponse (which escapes for us)."""

from collections.abc import Mapping

from twilio.twiml.voice_response import VoiceResponse

from switchboard.agent import Voice

# <Say> names Polly voices `Polly.<Id>` (standard), `Polly.<Id>-Neural` and `Polly.<Id>-Generative`.
# It has no long-form engine: Polly's long-form voices are also generative voices, the closest there is.
_SAY_ENGINE_SUFFIX = {"standard": "", "neural": "-Neural", "generative": "-Generative", "long-form": "-Generative"}


def say_voice(voice: Voice) -> str:
    """The `<Say voice>` value for an agent's Polly voice, e.g. `Polly.Joanna-Neural`."""
    return f"Polly.{voice.id}{_SAY_ENGINE_SUFFIX[voice.engine]}"


def connect_stream(action_url: str, stream_url: str, parameters: Mapping[str, str]) -> str:
    """Connect the call to the media stream; Twilio requests `action_url` when the stream ends.

    `parameters` reach the streaming service in the `start` message's customParameters: Twilio strips
    query strings from `<Stream url>`, so this is the only way to hand it anything.
    """
    response = VoiceResponse()
    connect = response.connect(action=action_url, method="POST")
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    return str(response)


def say_and_hang_up(text: str, voice: Voice | None = None, language: str | None = None) -> str:
    """Say `text` (in the agent's voice when there is one, else Twilio's default) and hang up."""
    response = VoiceResponse()
    if voice is None:
        response.say(text, language=language)
    else:
        response.say(text, voice=say_voice(voice), language=language)
    response.hangup()
    return str(response)


def hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)
