"""Test-only delegate plugins for the core's tests (a fixture, not a backend)."""
