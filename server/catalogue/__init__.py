"""Earthquake catalogues: FDSN services, files, refresh job, replay service."""
