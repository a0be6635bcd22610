"""Simulated bench parts: a pty null-modem cable and node processes running the real firmware."""
