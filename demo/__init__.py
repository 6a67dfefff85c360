"""`make demo`: whole calls through the platform on this machine, with no accounts."""
