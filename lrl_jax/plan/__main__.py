"""Will it fit? `python -m lrl_jax.plan --config=configs/NAME.py --target=h100x8 [--preset=sdar-8b] [--config.x.y=v]`

Compiles every program of one RL step (rollout, logp_old/ref, micro_grads/accumulate, optimizer update) for the
target's devices from this CPU host, with abstract sharded inputs, and prints their per-device memory against the
device's, the largest rollout batch / micro-batch that fits when the config does not, and the step's FLOPs and
time at 40% MFU. Exit code 0: fits; 1: does not (or a program fails to compile for the target); 2: bad input.
Needs the plan extra (pip install -e ".[plan]"). docs/PLAN.md has the details.
"""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"  # compile for targets from this host; never initialise a local accelerator
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata-server probe for TPU topologies
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # libtpu otherwise allows one process per host

from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from lrl_jax import cli, console  # noqa: E402

PROG = "python -m lrl_jax.plan"


def define_flags(fv: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file("config", None, "config file (configs/*.py[:ARG])", flag_values=fv,
                                  lock_config=True)
  flags.DEFINE_string("target", None, "h100x8, h200x8, h100x1, v5p-8, v5e-16, v5e:2x2, ... (docs/PLAN.md)",
                      flag_values=fv)
  flags.DEFINE_string("preset", None, "model shape: sdar-1.7b | sdar-4b | sdar-8b | cpu-small (default: the "
                      "config's checkpoint's config.json, no weights read; without a checkpoint, model.tiny)",
                      flag_values=fv)
  flags.DEFINE_integer("prompt_len", 256, "prompt tokens of the longest rollout / training row", flag_values=fv)
  flags.DEFINE_float("tpf", 4.81, "tokens per denoising forward assumed for the rollout's FLOPs (4.81: SDAR-8B-b32 "
                     "on MATH500)", flag_values=fv)
  flags.DEFINE_string("response_tokens", "", "MEDIAN,SIGMA: response lengths as a log-normal (capped at "
                      "max_new_tokens) for the step's FLOPs and time, e.g. 350,0.8; default: every response at "
                      "max_new_tokens (the worst case; memory is always planned at it)", flag_values=fv)
  flags.DEFINE_float("mem_fraction", None, "usable fraction of device memory (default: 0.92 on GPUs, as "
                     "launch/train_rl.sh sets XLA_PYTHON_CLIENT_MEM_FRACTION; 1 on TPUs)", flag_values=fv)
  flags.DEFINE_bool("search", True, "when it does not fit, search the largest rollout batch / micro-batch that does",
                    flag_values=fv)
  flags.DEFINE_bool("flops", True, "count the step's FLOPs from a CPU compile of the same programs", flag_values=fv)
  flags.DEFINE_string("json", None, "also write the report as JSON to this path", flag_values=fv)
  flags.DEFINE_string("attention", "auto", "training attention backend to compile (auto: the target platform's, as "
                      "the trainer chooses; flash: the XLA key-chunked path; xla: dense scores)", flag_values=fv)
  flags.DEFINE_bool("verbose", False, "print the compilers' native log lines too", flag_values=fv)
  flags.mark_flags_as_required(["config", "target"], flag_values=fv)


def _main(fv: flags.FlagValues) -> int:
  with console.without_notices():  # also when main() is called in-process, not as `python -m` (console.setup)
    from lrl_jax.plan import command

  logging.set_verbosity(logging.ERROR)
  return command.run(fv.config, target_name=fv.target, preset=fv.preset, prompt_len=fv.prompt_len, tpf=fv.tpf,
                     response_tokens=fv.response_tokens, mem_fraction=fv.mem_fraction, do_search=fv.search,
                     do_flops=fv.flops, json_path=fv.json, verbose=fv.verbose, attention=fv.attention)


def main(argv: list[str] | None = None) -> int:
  return cli.run(define_flags, _main, argv, PROG, __doc__, config_flags=("config",))


if __name__ == "__main__":
  sys.exit(main())
