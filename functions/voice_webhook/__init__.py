"""POST /twilio/voice, /twilio/stream-ended and /twilio/amd."""
