"""Launch commands: the command lines (and config files) that would run a serving plan on a real
engine, for `plan serve --emit ENGINE`.

One small class per engine (`vllm.py`, `sglang.py`, `trtllm.py`), registered by its `--emit`
name. Each states the release its flags target, which of parasim's schedulers that release runs
(`schedulers`; the planner searches only those when `--emit` is given), and turns the plan's
pools into commands. What does not translate exactly (a checkpoint that must be quantized
offline, a router that lives outside the engine, a multi-node launch) is a note printed beside
the commands, never dropped.

The plan is read through `serving.simulate.plan_pools`, so the token budget, batch limit and KV
budget are the ones the simulation ran with, not the flags' defaults.
"""

from parasim.engines.launch.base import LAUNCHERS, Launch, LaunchContext, Launcher, get_launcher, launch_for

# registered in this order (the --emit help lists them so)
from parasim.engines.launch import vllm as _vllm  # noqa: E402,F401,I001
from parasim.engines.launch import sglang as _sglang  # noqa: E402,F401
from parasim.engines.launch import trtllm as _trtllm  # noqa: E402,F401

__all__ = ["LAUNCHERS", "Launch", "LaunchContext", "Launcher", "get_launcher", "launch_for"]
