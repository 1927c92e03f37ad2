"""Engine profiles: the defaults each serving engine (TensorRT-LLM, vLLM, SGLang, TGI, LMDeploy)
would have used, by release, for the plan fields a user or a case leaves open."""
