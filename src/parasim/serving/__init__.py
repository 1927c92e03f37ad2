"""Iteration-level, event-driven serving simulator (see docs/serving.md)."""

from parasim.serving.metrics import SLO
from parasim.serving.plan import ServingPlan
from parasim.serving.simulate import ServingResult, simulate
from parasim.serving.workload import Request, Workload, generate, read_trace

__all__ = ["SLO", "Request", "ServingPlan", "ServingResult", "Workload", "generate", "read_trace", "simulate"]
