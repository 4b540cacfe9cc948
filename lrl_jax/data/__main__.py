"""`python -m lrl_jax.data download --dataset NAME --out DIR` and `... demo --n N --difficulty D --out FILE`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lrl_jax.data.demo_tasks import MAX_DIFFICULTY, make_tasks
from lrl_jax.data.download import DownloadError, download
from lrl_jax.data.formats import DATASET_KINDS, DataFormatError


def _parser() -> argparse.ArgumentParser:
  """Sub-commands: download a published dataset, or write procedural demo tasks."""
  parser = argparse.ArgumentParser(prog="python -m lrl_jax.data", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  dl = sub.add_parser("download", help="fetch a published dataset file through huggingface_hub")
  dl.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASET_KINDS)}")
  dl.add_argument("--out", required=True, help="output directory; the file is written as <DIR>/<NAME>.json")
  demo = sub.add_parser("demo", help="write procedural arithmetic tasks (math format) for the CPU demo")
  demo.add_argument("--n", type=int, default=1000)
  demo.add_argument("--difficulty", type=int, default=1, choices=range(1, MAX_DIFFICULTY + 1))
  demo.add_argument("--seed", type=int, default=0)
  demo.add_argument("--out", required=True, help="output JSON file")
  return parser


def _write_demo(args: argparse.Namespace) -> Path:
  """Write the demo tasks as a JSON list through a temp file and a rename."""
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
  tasks = [t.to_dict() for t in make_tasks(args.n, args.difficulty, args.seed)]
  tmp.write_text(json.dumps(tasks, indent=1) + "\n", encoding="utf-8")
  os.replace(tmp, out)
  return out


def main(argv: list[str] | None = None) -> int:
  """Run a sub-command; network failures exit 1, bad names or data exit 2."""
  args = _parser().parse_args(argv)
  try:
    path = download(args.dataset, args.out) if args.command == "download" else _write_demo(args)
  except DownloadError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2 if str(e).startswith("unknown dataset") else 1
  except DataFormatError as e:
    print(f"error: downloaded file does not match the published format: {e}", file=sys.stderr)
    return 2
  print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
