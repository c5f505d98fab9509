"""Simulated station parts: composite charging schedules, car physics, OCPP charge points."""
