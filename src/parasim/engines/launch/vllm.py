"""vLLM launch commands (`vllm serve`), flags as in vLLM 0.11's engine arguments (V1 engine)."""

from __future__ import annotations

import json

from parasim.engines.launch.base import Instance, Launch, LaunchContext, Launcher, command, register

#: vLLM 0.11's NIXL connector for disaggregated prefill (docs: features/disagg_prefill, nixl_connector_usage)
NIXL = json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"}, separators=(",", ":"))


@register
class VLLMLauncher(Launcher):
    name = "vllm"
    engine = "vLLM"
    release = "0.11"
    source = "vLLM 0.11 engine arguments (docs.vllm.ai/en/v0.11.0/configuration/engine_args)"
    schedulers = {
        "sarathi": "the V1 scheduler: running decodes first, then prefill chunks up to --max-num-batched-tokens",
        "splitfuse": "the V1 scheduler with a larger --max-num-batched-tokens (the same rule)",
        "disagg": "prefill and decode instances joined by the NIXL KV connector (--kv-transfer-config)",
    }

    def build(self, ctx: LaunchContext) -> Launch:
        p = ctx.plan
        notes = ctx.notes("vLLM")
        instances = ctx.instances(8100 if p.is_disagg else 8000)
        if p.is_disagg:
            cmds = [self._serve(ctx, i, dp=1) for i in instances]
            notes.append("send requests through a prefill/decode proxy that forwards each request to a prefill "
                         "instance (max_tokens=1) and then to a decode instance, e.g. the toy proxy of vLLM's "
                         "NIXL integration tests or llm-d; prefill: "
                         + ", ".join(f"{i.host}:{i.port}" for i in instances if i.role == "prefill")
                         + "; decode: " + ", ".join(f"{i.host}:{i.port}" for i in instances if i.role == "decode"))
        else:
            # one process for all replicas: vLLM's data parallelism balances requests over them
            pool = ctx.pools[0]
            cmds = [self._serve(ctx, ctx.whole_pool(8000), dp=pool.replicas)]
            if pool.replicas > 1 and p.router != "round_robin":
                notes.append(f"vLLM's data-parallel front end balances by its own queue rule; parasim simulated "
                             f"the {p.router} router")
        if p.kv_reservation == "full":
            notes.append("vLLM grows each request's KV cache block by block and preempts when full; it has no "
                         "mode reserving prompt+output up front (the plan's kv_reservation=full)")
        if not p.schedule_ahead:
            notes.append("the plan was simulated without async scheduling (schedule_ahead false); vLLM 0.14 and "
                         "later turn it on by default, so add --no-async-scheduling there")
        if p.cuda_graph_max_batch is not None:
            notes.append(f"parasim ran decode batches above {p.cuda_graph_max_batch} eagerly; vLLM's CUDA-graph "
                         "capture sizes are set in its compilation config")
        return Launch(self.engine, self.release, tuple(cmds), notes=tuple(notes))

    def _serve(self, ctx: LaunchContext, inst: Instance, *, dp: int) -> str:
        p, pool = ctx.plan, inst.pool
        env = inst.env()
        if p.attention == "flash2":
            env.append("VLLM_FLASH_ATTN_VERSION=2")
        args = [
            ("--tensor-parallel-size", pool.tp),
            ("--pipeline-parallel-size", pool.pp if pool.pp > 1 else None),
            ("--data-parallel-size", dp if dp > 1 else None),
            ("--enable-expert-parallel", p.ep > 1),
            ("--max-num-seqs", pool.max_batch),
            ("--max-num-batched-tokens", pool.token_budget),
            ("--gpu-memory-utilization", p.gpu_memory_utilization),
            ("--block-size", p.block_size),
            ("--kv-cache-dtype", "fp8" if p.kv == "fp8" else None),
            ("--quantization", "fp8" if ctx.online_fp8() else None),
            ("--enable-prefix-caching" if p.prefix_cache else "--no-enable-prefix-caching", True),
            ("--disable-custom-all-reduce", not p.custom_allreduce),
            # batches formed one step ahead: V1's async scheduling (the flag from 0.10, the default from 0.14)
            ("--async-scheduling", p.schedule_ahead),
            ("--kv-transfer-config", NIXL if p.is_disagg else None),
            ("--port", inst.port),
        ]
        role = f"# {inst.role} instance on {inst.host}\n" if p.is_disagg else ""
        return role + command([*env, "vllm", "serve"], ctx.model_path, args)
