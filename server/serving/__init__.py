"""Endpoint logic: turns protocol requests into engine work and engine events into responses."""
