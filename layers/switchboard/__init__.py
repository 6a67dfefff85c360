"""Switchboard's shared package: settings, domain models, agents, call state and records, Twilio security.

Shipped as a Lambda layer for functions/ and installed into the streaming container.
"""
