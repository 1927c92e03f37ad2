"""The launch-command model shared by every engine: the context a plan is read through, the
Launcher interface and its registry, and the command-line writer."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from parasim.registry import Registry
from parasim.serving.plan import ServingPlan
from parasim.serving.simulate import Pool, plan_pools
from parasim.specs.cluster import ClusterSpec
from parasim.specs.model import ModelSpec


@dataclass(frozen=True)
class Launch:
    """What `--emit` prints: a shell script (config files as here-documents, then the commands) and
    the notes on what the engine will do differently from the simulated plan."""

    engine: str
    release: str
    commands: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)  # file name -> text, written by the script
    notes: tuple[str, ...] = ()
    front_end: bool = False  # the last command is a router/front end over the others

    def script(self) -> str:
        """The commands as one shell script: with several processes, each server runs in the
        background and the last command (a front end) in the foreground, or `wait` ends it."""
        out = [f"# {self.engine} {self.release}: the plan parasim simulated"]
        out += [f"# note: {n}" for n in self.notes]
        for name, text in self.files.items():
            out += [f"cat > {name} <<'EOF'", text.rstrip("\n"), "EOF"]
        if len(self.commands) == 1:
            out += list(self.commands)
        else:
            out += [c + " &" for c in self.commands[:-1]]
            last = self.commands[-1]
            out += [last] if self.front_end else [last + " &", "wait"]
        return "\n".join(out) + "\n"

    def to_mapping(self) -> dict[str, Any]:
        return {"engine": self.engine, "release": self.release, "commands": list(self.commands),
                "files": dict(self.files), "notes": list(self.notes), "script": self.script()}


@dataclass(frozen=True)
class Instance:
    """One engine process of a pool: its GPUs (global indices) and the port it listens on."""

    role: str  # mixed | prefill | decode
    pool: Pool
    gpu_ids: tuple[int, ...]
    port: int
    gpus_per_node: int

    @property
    def node(self) -> int:
        return self.gpu_ids[0] // self.gpus_per_node

    @property
    def host(self) -> str:
        return f"node{self.node}"

    @property
    def spans_nodes(self) -> bool:
        return self.gpu_ids[-1] // self.gpus_per_node != self.node

    def env(self) -> list[str]:
        """`CUDA_VISIBLE_DEVICES=...` (its local GPU indices) unless it takes its node's first GPUs,
        which an engine uses without being told."""
        local = [g % self.gpus_per_node for g in self.gpu_ids]
        if local == list(range(len(local))):
            return []
        return ["CUDA_VISIBLE_DEVICES=" + ",".join(map(str, local))]


@dataclass(frozen=True)
class LaunchContext:
    model: ModelSpec
    plan: ServingPlan  # resolved: weights, KV dtype and prefix cache filled in
    pools: tuple[Pool, ...]
    gpus_per_node: int

    @property
    def model_path(self) -> str:
        return self.model_path_for(offline_fp8=False)

    def model_path_for(self, *, offline_fp8: bool) -> str:
        """The Hub repository, or a placeholder for a model with none public, or for the quantized
        checkpoint the plan needs (`offline_fp8`: the engine cannot quantize fp8 at load)."""
        q = self.offline_quantized(online_ok=not offline_fp8)
        if q:
            return f"<path to the {q} checkpoint of {self.model.hf_repo or self.model.name}>"
        return self.model.hf_repo or f"<path to {self.model.name} weights>"

    def online_fp8(self) -> bool:
        """fp8 weights from a 16-bit checkpoint: vLLM and SGLang quantize at load (`--quantization fp8`)."""
        return self.plan.weights == "fp8" and self.model.native_weights != "fp8"

    def offline_quantized(self, online_ok: bool = True) -> str | None:
        """The format of a checkpoint that must be made offline (int8/int4/fp4, or fp8 where the
        engine cannot quantize at load), or None."""
        w, native = self.plan.weights, self.model.native_weights
        if w == native or w in ("bf16", "fp16"):
            return None
        if w == "fp8" and online_ok:
            return None
        return {"fp8": "FP8", "int8": "INT8 (W8A8)", "int4": "INT4 (AWQ/GPTQ)", "fp4": "FP4 (NVFP4/MXFP4)"}[w]

    def instances(self, base_port: int) -> list[Instance]:
        """Every engine process, packed onto GPUs in pool order (prefill before decode)."""
        out, gpu, port = [], 0, base_port
        for p in self.pools:
            per = p.tp * p.pp
            for _ in range(p.replicas):
                out.append(Instance(p.role, p, tuple(range(gpu, gpu + per)), port, self.gpus_per_node))
                gpu, port = gpu + per, port + 1
        return out

    def whole_pool(self, base_port: int) -> Instance:
        """A colocated plan's replicas as one engine process (the engine's own data parallelism)."""
        pool = self.pools[0]
        return Instance(pool.role, pool, tuple(range(pool.tp * pool.pp * pool.replicas)), base_port,
                        self.gpus_per_node)

    def notes(self, engine: str, *, offline_fp8: bool = False) -> list[str]:
        """Notes every engine shares: the checkpoint, a multi-node process."""
        out = []
        if not self.model.hf_repo:
            out.append(f"{self.model.name} has no public Hugging Face repository in the catalog: point the model "
                       "argument at your copy of its weights")
        q = self.offline_quantized(online_ok=not offline_fp8)
        if q:
            out.append(f"the plan runs {self.plan.weights} weights: quantize the checkpoint offline first "
                       f"(e.g. NVIDIA ModelOpt or llm-compressor) and pass its path")
        if self.plan.overlap != "none":
            out.append(f"the plan overlaps GEMMs, decode attention and TP all-reduces of nano-batches inside each GPU "
                       f"(--overlap {self.plan.overlap}); no {engine} flag does this: NanoFlow is its own engine "
                       "(github.com/efeslab/Nanoflow), so this command runs the plan without the overlap")
        if self.plan.cuda_graph_batch_sizes is not None and not engine.startswith("TensorRT-LLM"):
            out.append(f"the plan pads decode batches to the CUDA-graph sizes {list(self.plan.cuda_graph_batch_sizes)} "
                       f"(TensorRT-LLM's cuda_graph_config enable_padding); {engine} pads to its own capture sizes, "
                       "set in its own CUDA-graph options")
        if any(i.spans_nodes for i in self.instances(0)):
            out.append(f"an engine process spans more than one node of {self.gpus_per_node} GPUs: start it with "
                       f"{engine}'s multi-node launcher on every node (CUDA_VISIBLE_DEVICES below is per node)")
        return out


class Launcher:
    """One engine's launch commands for a plan."""

    name = ""  # the --emit value
    engine = ""  # its display name
    release = ""  # the release whose flags are written
    source = ""  # where the flags were read
    schedulers: dict[str, str] = {}  # parasim scheduler -> how this release runs it

    def build(self, ctx: LaunchContext) -> Launch:  # pragma: no cover - interface
        raise NotImplementedError

    def runs(self, scheduler: str) -> bool:
        return scheduler in self.schedulers


LAUNCHERS: Registry[type[Launcher]] = Registry("emit engine")
register = LAUNCHERS.register


def get_launcher(name: str, *, field: str = "emit") -> Launcher:
    return LAUNCHERS.get(name, field=field)()


def launch_for(name: str, model: ModelSpec, cluster: ClusterSpec, plan: ServingPlan) -> Launch:
    """`name`'s launch commands for `plan` on `cluster` (the plan is resolved and sized here)."""
    launcher = get_launcher(name)
    plan = plan.resolved(model)
    pools, _ = plan_pools(model, cluster, plan)
    ctx = LaunchContext(model=model, plan=plan, pools=tuple(pools), gpus_per_node=cluster.gpus_per_node)
    return launcher.build(ctx)


def command(prefix: list[str], model_path: str | None, args: list[tuple[str, Any]]) -> str:
    """A shell command line: `prefix` (environment and program words), the model, then each
    (flag, value) pair; a value of True is a bare flag, None or False leaves the flag out. The model
    and the values are shell-quoted (a placeholder path holds `<`)."""
    words = [*prefix, *([shlex.quote(model_path)] if model_path is not None else [])]
    for flag, value in args:
        if value is None or value is False:
            continue
        words.append(flag)
        if value is not True:
            words.append(shlex.quote(str(value)))
    return " ".join(words)


def yaml_text(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, default_flow_style=False)
