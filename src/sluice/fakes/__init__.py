"""Test doubles for upstream LLM providers, on loopback only (never for Kubernetes: tests use a
real API server). Also runnable for demos."""

from sluice.fakes.upstream import FakeUpstream, SeenRequest

__all__ = ["FakeUpstream", "SeenRequest"]
