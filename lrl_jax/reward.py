"""`python -m lrl_jax.reward --input=IN.jsonl --output=OUT.jsonl`: judge generations from any engine.

Each input record carries the dataset fields (SPEC §8) plus `response` (text), and optionally `response_length`
and `max_new_tokens` (truncation rule). The output repeats each record with `extracted`, `correct`, `pass_rate`
and `error` added (lrl_jax/rewards). Bad input or an unwritable output stops with one `error:` line naming the file,
record and field (exit code 2) before any judging.
"""

from __future__ import annotations

import sys
import time

from absl import flags

from lrl_jax import cli, files
from lrl_jax.rewards.judge import Judge, JudgeConfig
from lrl_jax.rewards.responses import load_inputs, write_outputs

PROG = "python -m lrl_jax.reward"


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("input", None, "JSONL (or JSON list) of records with a 'response' field", flag_values=fv)
  flags.DEFINE_string("output", None, "where to write the scored records (JSONL, or a JSON list for .json)",
                      flag_values=fv)
  flags.DEFINE_integer("workers", None, "judge worker processes (default: 2 per CPU, at most 32)", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_float("math_timeout", JudgeConfig.math_timeout_s, "seconds per math-verify check before its worker "
                     "is killed", lower_bound=0.0, flag_values=fv)
  flags.DEFINE_bool("progress", True, "draw a progress bar (--noprogress: none)", flag_values=fv)
  flags.mark_flags_as_required(["input", "output"], flag_values=fv)


def _score(fv: flags.FlagValues) -> None:
  files.check_output_file(fv.output)
  raws, records, responses, truncated = load_inputs(fv.input)
  from tqdm import tqdm

  start = time.perf_counter()
  config = JudgeConfig(workers=fv.workers, math_timeout_s=fv.math_timeout)
  with Judge(config) as judge, tqdm(total=len(records), desc="judging", unit="resp", disable=not fv.progress,
                                    file=sys.stderr) as bar:
    results = judge.score(records, responses, truncated, progress=bar.update)
  write_outputs(fv.output, [{**raw, **result} for raw, result in zip(raws, results)])
  n = max(1, len(results))
  accuracy = sum(r["correct"] for r in results) / n
  rate = sum(r["pass_rate"] for r in results) / n
  print(f"scored {len(results)} responses in {time.perf_counter() - start:.1f}s: accuracy {accuracy:.3f}, "
        f"mean pass rate {rate:.3f} -> {fv.output}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
  return cli.run(define_flags, _score, argv, PROG, __doc__)


if __name__ == "__main__":
  cli.program(main)
