"""TensorRT-LLM launch commands (`trtllm-serve`, PyTorch backend), flags and LLM-API options as in
TensorRT-LLM 1.0; disaggregation as `trtllm-serve disaggregated` runs it (context and generation
servers behind one front end)."""

from __future__ import annotations

from typing import Any

from parasim.engines.launch.base import Instance, Launch, LaunchContext, Launcher, command, register, yaml_text


#: TensorRT-LLM's default KV-cache block (tokens_per_block)
TRTLLM_TOKENS_PER_BLOCK = 32


@register
class TRTLLMLauncher(Launcher):
    name = "trtllm"
    engine = "TensorRT-LLM"
    release = "1.0"
    source = "TensorRT-LLM 1.0 trtllm-serve reference and disaggregated-serving guide (nvidia.github.io/TensorRT-LLM)"
    schedulers = {
        "continuous": "in-flight batching with whole contexts (enable_chunked_prefill: false)",
        "sarathi": "in-flight batching with context chunks beside the generation requests (enable_chunked_prefill)",
        "splitfuse": "the same, with a larger --max_num_tokens",
        "disagg": "context and generation servers behind trtllm-serve disaggregated",
    }

    def build(self, ctx: LaunchContext) -> Launch:
        p = ctx.plan
        notes = ctx.notes("TensorRT-LLM (mpirun / trtllm-llmapi-launch)", offline_fp8=True)
        files: dict[str, str] = {}
        if p.is_disagg:
            instances = ctx.instances(8001)
            for role in ("prefill", "decode"):
                pool = next(i.pool for i in instances if i.role == role)
                files[f"{role}.yml"] = yaml_text(self._options(ctx, pool, role))
            cmds = [self._serve(ctx, i, f"{i.role}.yml") for i in instances]
            files["disagg.yml"] = yaml_text({
                "hostname": "0.0.0.0", "port": 8000, "backend": "pytorch",
                "context_servers": self._servers(instances, "prefill"),
                "generation_servers": self._servers(instances, "decode")})
            cmds.append("trtllm-serve disaggregated -c disagg.yml")
        elif p.ep > 1:
            # DP attention: one process over the ep GPUs, attention data-parallel, experts spread
            files["extra.yml"] = yaml_text(self._options(ctx, ctx.pools[0], "mixed") | {"enable_attention_dp": True})
            whole = ctx.whole_pool(8000)
            cmds = [self._serve(ctx, whole, "extra.yml", tp=p.ep, ep=p.ep)]
        else:
            files["extra.yml"] = yaml_text(self._options(ctx, ctx.pools[0], "mixed"))
            instances = ctx.instances(8000)
            cmds = [self._serve(ctx, i, "extra.yml") for i in instances]
            if len(instances) > 1:
                notes.append(f"{len(instances)} independent servers: put a load balancer in front "
                             f"(parasim simulated the {p.router} router)")
        if p.kv_reservation == "full":
            notes.append("the plan reserves prompt+output KV up front: TensorRT-LLM's GUARANTEED_NO_EVICT capacity "
                         "policy (scheduler_config.capacity_scheduler_policy) does that; it is set in the options file")
        if p.block_size != TRTLLM_TOKENS_PER_BLOCK:
            notes.append(f"TensorRT-LLM pages the KV cache in blocks of {TRTLLM_TOKENS_PER_BLOCK} tokens; the "
                         f"simulation used {p.block_size}")
        if not p.schedule_ahead:
            notes.append("the plan was simulated without the overlap scheduler (schedule_ahead false), so the options "
                         "set disable_overlap_scheduler; simulate with --schedule-ahead to keep TensorRT-LLM's default")
        elif p.is_disagg:
            notes.append("the context servers run without the overlap scheduler, as TensorRT-LLM's disaggregated "
                         "examples do; the simulation formed the prefill pool's batches ahead (schedule_ahead)")
        notes.append("kv_cache_free_gpu_memory_fraction is a share of the memory left after weights and "
                     "activation buffers; it is set so the KV cache gets the bytes the simulation gave it")
        return Launch(self.engine, self.release, tuple(cmds), files=files, notes=tuple(notes), front_end=p.is_disagg)

    def _options(self, ctx: LaunchContext, pool, role: str) -> dict[str, Any]:
        """The LLM-API options file (--extra_llm_api_options) of a pool."""
        p = ctx.plan
        kv: dict[str, Any] = {"enable_block_reuse": bool(p.prefix_cache)}
        if p.kv == "fp8":
            kv["dtype"] = "fp8"
        opts: dict[str, Any] = {"enable_chunked_prefill": p.scheduler != "continuous", "kv_cache_config": kv}
        if p.kv_reservation == "full":
            opts["scheduler_config"] = {"capacity_scheduler_policy": "GUARANTEED_NO_EVICT"}
        if not p.custom_allreduce:
            opts["allreduce_strategy"] = "NCCL"
        if p.cuda_graph_max_batch is not None:
            opts["cuda_graph_config"] = {"max_batch_size": p.cuda_graph_max_batch}
        if p.cuda_graph_batch_sizes is not None:
            opts["cuda_graph_config"] = {**opts.get("cuda_graph_config", {}), "enable_padding": True,
                                         "batch_sizes": list(p.cuda_graph_batch_sizes)}
        if role != "mixed":
            opts["cache_transceiver_config"] = {"backend": "DEFAULT"}
        if role == "prefill" or not p.schedule_ahead:
            # the context servers of TRT-LLM's disaggregated examples; elsewhere a plan simulated without
            # batches formed ahead (the overlap scheduler is on by default from 0.20)
            opts["disable_overlap_scheduler"] = True
        return opts

    @staticmethod
    def _servers(instances: list[Instance], role: str) -> dict[str, Any]:
        mine = [i for i in instances if i.role == role]
        return {"num_instances": len(mine), "urls": [f"{i.host}:{i.port}" for i in mine]}

    @staticmethod
    def _free_fraction(pool) -> float:
        """The KV cache's bytes as a share of what is free after weights, activations and the
        runtime's reserve (TensorRT-LLM's meaning of the fraction), rounded down to 0.01."""
        b = pool.kvb
        free = b.hbm - b.weights - b.activations - b.reserved
        return max(0.01, int(100 * max(0.0, b.kv) / free) / 100) if free > 0 else 0.01

    def _serve(self, ctx: LaunchContext, inst: Instance, options: str, *, tp: int | None = None,
               ep: int | None = None) -> str:
        p, pool = ctx.plan, inst.pool
        args = [
            ("--backend", "pytorch"),
            ("--tp_size", tp or pool.tp),
            ("--pp_size", pool.pp if pool.pp > 1 else None),
            ("--ep_size", ep),
            ("--max_batch_size", pool.max_batch),
            ("--max_num_tokens", pool.token_budget),
            ("--kv_cache_free_gpu_memory_fraction", self._free_fraction(pool)),
            ("--extra_llm_api_options", options),
            ("--host", "0.0.0.0"),
            ("--port", inst.port),
        ]
        role = f"# {inst.role} server on {inst.host}\n" if p.is_disagg else ""
        return role + command([*inst.env(), "trtllm-serve"],
                              ctx.model_path_for(offline_fp8=True), args)
