"""Helpers for tests of entry points run as programs."""

import re

# Native libraries (XLA, CUDA plugins) log to stderr in glog format before absl is initialised; they are not ours.
_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWEF]\d{4} \d\d:\d\d:\d\d)")


def our_lines(stderr: str) -> list[str]:
  """The stderr lines our program wrote (native libraries' glog lines dropped)."""
  return [line for line in stderr.splitlines() if line.strip() and not _NATIVE_LOG.match(line)]
