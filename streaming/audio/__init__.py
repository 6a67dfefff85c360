"""Telephone audio: the G.711 μ-law codec, voice activity detection and a speech-like signal synthesizer."""
