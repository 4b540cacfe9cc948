"""Dispatch `python -m lrl_jax.bench <name> --flag=value ...` to `lrl_jax.bench.<name>.main(argv)`."""

import importlib
import sys

from lrl_jax import cli

BENCHMARKS = ("decode", "rollout", "train", "reward", "moe", "moe_dispatch")


def main(argv: list[str]) -> int:
  usage = f"usage: python -m lrl_jax.bench {{{'|'.join(BENCHMARKS)}}} --flag=value ...  (NAME --help: its flags)"
  if argv[:1] in (["--help"], ["-h"]):
    print(usage)
    return 0
  if not argv or argv[0] not in BENCHMARKS:
    print(f"error: {argv[0] if argv else 'NAME'}: unknown benchmark; {usage}", file=sys.stderr)
    return 2
  module = importlib.import_module(f"lrl_jax.bench.{argv[0]}")
  return module.main(argv[1:]) or 0


if __name__ == "__main__":
  cli.program(lambda: main(sys.argv[1:]))
