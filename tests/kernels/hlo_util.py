"""Reading compiled HLO text in the kernel tests."""

import re

_GATHER = re.compile(r"=\s*(.*?)\s*\ball-gather(?:-start)?\(")


def gathered_shapes(text: str) -> list[str]:
  """The result types of every all-gather in a compiled module (tuples of a combined gather included)."""
  return [m.group(1) for m in map(_GATHER.search, text.splitlines()) if m]
