"""Dispatch `python -m lrl_jax.bench <name> ...` to `lrl_jax.bench.<name>.main(argv)`."""

import importlib
import sys

BENCHMARKS = ("decode", "train", "reward", "model")


def main(argv: list[str]) -> int:
  if not argv or argv[0] not in BENCHMARKS:
    print(f"usage: python -m lrl_jax.bench {{{'|'.join(BENCHMARKS)}}} [flags]", file=sys.stderr)
    return 2
  module = importlib.import_module(f"lrl_jax.bench.{argv[0]}")
  return module.main(argv[1:]) or 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
