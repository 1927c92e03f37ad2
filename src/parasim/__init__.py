"""parasim: simulate and plan LLM training and serving layouts on GPU clusters, on a CPU."""

__version__ = "0.1.0"
