"""SGLang launch commands (`python -m sglang.launch_server`), flags as in SGLang 0.5's server
arguments; disaggregation as its PD-disaggregation guide runs it (a router in front)."""

from __future__ import annotations

from parasim.engines.launch.base import Instance, Launch, LaunchContext, Launcher, command, register

#: parasim router -> SGLang's data-parallel `--load-balance-method`
LOAD_BALANCE = {"round_robin": "round_robin", "least_outstanding_tokens": "shortest_queue"}


@register
class SGLangLauncher(Launcher):
    name = "sglang"
    engine = "SGLang"
    release = "0.5"
    source = "SGLang server arguments (docs.sglang.ai advanced_features/server_arguments, pd_disaggregation)"
    schedulers = {
        "sglang": "SGLang's default: prefill-first batches, prompts longer than --chunked-prefill-size split",
        "sarathi": "--enable-mixed-chunk: prefill chunks ride in the decode batches",
        "splitfuse": "--enable-mixed-chunk with a larger --chunked-prefill-size",
        "disagg": "--disaggregation-mode prefill|decode instances behind sglang_router --pd-disaggregation",
    }

    def build(self, ctx: LaunchContext) -> Launch:
        p = ctx.plan
        notes = ctx.notes("SGLang")
        if p.is_disagg:
            instances = ctx.instances(30000)
            cmds = [self._serve(ctx, i, dp=1) for i in instances]
            urls = [(i.role, f"http://{i.host}:{i.port}") for i in instances]
            cmds.append(command(["python", "-m", "sglang_router.launch_router", "--pd-disaggregation"], None,
                                [*((f"--{role}", url) for role, url in urls), ("--host", "0.0.0.0"), ("--port", 8000)]))
        else:
            cmds = [self._serve(ctx, ctx.whole_pool(30000), dp=ctx.pools[0].replicas)]
        if not p.schedule_ahead:
            notes.append("the plan was simulated without SGLang's overlap scheduler (schedule_ahead false), so the "
                         "command disables it; simulate with --schedule-ahead (the sglang engine's default) to keep "
                         "SGLang's default")
        if p.kv_reservation == "full":
            notes.append("SGLang grows each request's KV cache as it decodes and retracts requests when full; the "
                         "plan's kv_reservation=full (reserve prompt+output up front) has no flag")
        return Launch(self.engine, self.release, tuple(cmds), notes=tuple(notes), front_end=p.is_disagg)

    def _serve(self, ctx: LaunchContext, inst: Instance, *, dp: int) -> str:
        p, pool = ctx.plan, inst.pool
        mixed = p.scheduler in ("sarathi", "splitfuse")
        args = [
            # with DP attention SGLang's --tp-size spans the process's ranks: attention TP = tp-size / dp-size
            ("--tp-size", pool.tp * dp if p.ep > 1 else pool.tp),
            ("--pp-size", pool.pp if pool.pp > 1 else None),
            ("--dp-size", dp if dp > 1 else None),
            ("--enable-dp-attention", p.ep > 1),
            ("--ep-size", p.ep if p.ep > 1 else None),
            ("--load-balance-method", LOAD_BALANCE.get(p.router) if dp > 1 else None),
            ("--max-running-requests", pool.max_batch),
            ("--chunked-prefill-size", pool.token_budget),
            ("--enable-mixed-chunk", mixed),
            ("--mem-fraction-static", p.gpu_memory_utilization),
            ("--page-size", p.block_size),
            ("--kv-cache-dtype", "fp8_e4m3" if p.kv == "fp8" else None),
            ("--quantization", "fp8" if ctx.online_fp8() else None),
            ("--disable-radix-cache", not p.prefix_cache),
            ("--disable-custom-all-reduce", not p.custom_allreduce),
            # SGLang (>= 0.4) forms each batch ahead by default; a plan simulated without it launches without it
            ("--disable-overlap-schedule", not p.schedule_ahead),
            ("--attention-backend", "flashinfer" if p.attention == "flash2" else None),
            ("--cuda-graph-max-bs", p.cuda_graph_max_batch),
            ("--disaggregation-mode", inst.role if p.is_disagg else None),
            ("--disaggregation-transfer-backend", "nixl" if p.is_disagg else None),
            ("--host", "0.0.0.0"),
            ("--port", inst.port),
        ]
        role = f"# {inst.role} instance on {inst.host}\n" if p.is_disagg else ""
        return role + command([*inst.env(), "python", "-m",
                               "sglang.launch_server", "--model-path"], ctx.model_path, args)
