"""The slowest of N ranks: a synchronous step waits for the slowest GPU of the job.

Identical parts do not run at identical speed: power management and manufacturing spread their
sustained clocks (Sinha et al., "Not All GPUs Are Created Equal", SC'22, arXiv 2208.11035: 8 %
average performance variation across the GPUs of one cluster, outliers aside, on five clusters;
the catalog's `efficiency.rank_speed_sigma` is that spread as a standard deviation). With per-GPU
compute speed ~ Normal(1, sigma), the critical rank's compute is stretched by the expected maximum
of N such draws, sigma * z(N); z(N) is Blom's approximation of the expected largest of N standard
normal draws, inv_Phi((N - 0.375) / (N + 0.25)) (0 for one GPU, ~sqrt(2 ln N) for large N).
"""

from __future__ import annotations

from statistics import NormalDist


def expected_max_z(n: int) -> float:
    """Expected largest of n standard normal draws (Blom 1958); 0 for n <= 1."""
    if n <= 1:
        return 0.0
    return NormalDist().inv_cdf((n - 0.375) / (n + 0.25))


def straggler_s(compute_s: float, sigma: float, ranks: int) -> float:
    """Seconds the slowest of `ranks` GPUs adds to a step whose critical rank computes `compute_s`."""
    return compute_s * sigma * expected_max_z(ranks)
