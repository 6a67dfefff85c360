"""The Fargate media service: Twilio Media Streams in, turn-taking, streamed replies out."""
