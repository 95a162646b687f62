"""Launchers: they start everything, so they sit on top."""
