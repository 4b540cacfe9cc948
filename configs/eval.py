"""Evaluation sweep: `python -m lrl_jax.eval --config configs/eval.py --workdir W --config.checkpoints=A,B`.

Greedy decoding (one response per task) over a threshold sweep at the checkpoint's block size; see docs/EVAL.md.
The config is locked, so a mistyped key fails with a "Did you mean ..." suggestion.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.checkpoints = ""  # comma-separated HF/Orbax model dirs or training run dirs (newest checkpoint), in one report
  c.checkpoint = ""  # shorthand for a single dir; set this or `checkpoints`, not both
  c.datasets = "gsm8k"  # comma-separated: shipped sample names (gsm8k, math500, mbpp, humaneval, ...), files or "demo"
  # "demo": the demo's held-out problems; a checkpoint from a training run (its dir, final/ or warmstart/) supplies
  # its own data settings, otherwise these (configs/demo.py's)
  c.demo = ml_collections.ConfigDict(dict(eval_size=128, difficulty=1, shuffle_seed=0))
  c.limit = 0  # first N tasks of each dataset (0 = all)
  c.thresholds = (0.95, 0.9, 0.8, 0.7, 0.5)  # confidence thresholds θ (low_confidence_dynamic)
  c.block_sizes = ()  # decode block sizes; () = each checkpoint's own block size
  c.steps = 0  # denoising steps per block (0 = block size)
  c.strategy = "low_confidence_dynamic"
  c.responses_per_task = 1  # 1 = greedy; > 1 samples with temperature/top_k/top_p (accuracy = mean over responses)
  c.temperature = 1.0
  c.top_k = 0
  c.top_p = 1.0
  c.max_new_tokens = 512
  c.stop_ids = ""  # comma-separated ids, "none" for no stop; "" = the checkpoint's eos ids
  c.batch_size = 8  # sequences decoded together; reported with every TPS
  c.dtype = "float32"  # float32 | bfloat16 (params and decode compute)
  c.attn_impl = "xla"  # xla | pallas
  c.seed = 0
  c.y_max = ""  # AUP y_max: "" = best accuracy among the compared runs; "88.9" = all datasets; "gsm8k=90,mbpp=58"
  c.reward = ml_collections.ConfigDict(dict(workers=0, math_timeout=5.0))  # judge pool size (0 = auto)
  c.progress = True
  c.lock()
  return c
