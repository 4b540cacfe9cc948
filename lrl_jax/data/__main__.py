"""`python -m lrl_jax.data download --dataset=NAME --out=DIR` and `... demo --n=N --difficulty=D --out=FILE`.

A bad name or a file in the wrong format is one `error:` line and exit code 2; no network is one line and exit 1.
"""

from __future__ import annotations

import sys

from absl import flags

from lrl_jax import cli, files
from lrl_jax.data.demo_tasks import MAX_DIFFICULTY, make_tasks
from lrl_jax.data.download import DownloadError, canonical_name, download
from lrl_jax.data.formats import DATASET_KINDS, DataFormatError
from lrl_jax.errors import UserError

PROG = "python -m lrl_jax.data"


def _download_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("dataset", None, f"one of: {', '.join(DATASET_KINDS)}", flag_values=fv)
  flags.DEFINE_string("out", None, "output directory; the file is written as <DIR>/<NAME>.json", flag_values=fv)
  flags.mark_flags_as_required(["dataset", "out"], flag_values=fv)


def _demo_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("n", 1000, "number of tasks", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("difficulty", 1, f"1..{MAX_DIFFICULTY}", lower_bound=1, upper_bound=MAX_DIFFICULTY,
                       flag_values=fv)
  flags.DEFINE_integer("seed", 0, "task generator seed", lower_bound=0, flag_values=fv)
  flags.DEFINE_string("out", None, "output JSON file", flag_values=fv)
  flags.mark_flag_as_required("out", flag_values=fv)


def _download(fv: flags.FlagValues) -> int:
  """Fetch a published dataset through huggingface_hub (exit 1 when the network fails)."""
  try:
    canonical_name(fv.dataset)
  except DownloadError as e:
    raise UserError(f"--dataset: {e}") from None
  try:
    path = download(fv.dataset, fv.out)
  except DataFormatError as e:
    raise UserError(f"downloaded file does not match the published format: {e}") from None
  except DownloadError as e:
    print(f"error: {cli.one_line(e)}", file=sys.stderr)
    return 1
  print(path)
  return 0


def _demo(fv: flags.FlagValues) -> None:
  """Write procedural arithmetic tasks (math format) as a JSON list."""
  files.write_json(fv.out, [t.to_dict() for t in make_tasks(fv.n, fv.difficulty, fv.seed)], indent=1)
  print(fv.out)


COMMANDS = {"download": (_download_flags, _download), "demo": (_demo_flags, _demo)}


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  usage = f"usage: {PROG} {{{'|'.join(COMMANDS)}}} --flag=value ...  ({PROG} COMMAND --help lists the flags)"
  if argv[:1] in (["--help"], ["-h"]):
    print(f"{usage}\n\n{__doc__}")
    return 0
  if not argv or argv[0] not in COMMANDS:
    print(f"error: {argv[0] if argv else 'COMMAND'}: unknown command; {usage}", file=sys.stderr)
    return 2
  define, body = COMMANDS[argv[0]]
  return cli.run(define, body, argv[1:], f"{PROG} {argv[0]}", __doc__)


if __name__ == "__main__":
  cli.program(main)
