"""Speech-to-text, the language model and text-to-speech, behind interfaces the call engine uses."""
