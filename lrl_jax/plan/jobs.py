"""Compile in a `lrl_jax.plan.worker` child process; a program that crashes the compiler is one failed report.

The parent never loads a compiler plugin. A `Worker` keeps one child alive across requests (the main compile, each
search candidate), so the imports and the topology are paid once; when the child dies inside a program's compile,
that program is reported as failed with the compiler's last message and a fresh child carries on after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import NamedTuple

from lrl_jax.plan.memory import Report
from lrl_jax.plan.worker import EVENT


CPU_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


class BadInput(Exception):
  """The worker found the input unusable (`key`: `message`), e.g. a mesh the physical topology cannot hold."""

  def __init__(self, key: str, message: str):
    super().__init__(f"{key}: {message}")


class Result(NamedTuple):
  """A request's reports (in program order), each program's group (rollout | train | apply) and FLOPs by name."""
  reports: list[Report]
  groups: dict
  flops: dict


def _last_message(log: str) -> str:
  lines = [line.strip() for line in log.splitlines() if line.strip() and "cudart_stub" not in line
           and not line.startswith("WARNING: All log messages")]
  text = lines[-1] if lines else "no message"
  return text if len(text) <= 240 else text[:237] + "..."


class Worker:
  """A compiling child process for one spec (config, target, platform); `setup` holds its first event's facts."""

  def __init__(self, spec: dict):
    self.spec, self.proc, self.setup, self.logs = spec, None, {}, []
    self._err = None

  def start(self) -> None:
    """Start the child now (its imports and topology then overlap other work); `compile` starts it otherwise."""
    self._err = tempfile.TemporaryFile(mode="w+")
    env = dict(os.environ)
    if self.spec["platform"] == "cpu":  # only the optimized HLO is read: skip LLVM's expensive optimizations
      env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {CPU_XLA_FLAGS}".strip()
    self.proc = subprocess.Popen([sys.executable, "-m", "lrl_jax.plan.worker"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=self._err, text=True, bufsize=1, env=env)
    self.proc.stdin.write(json.dumps(self.spec) + "\n")
    self.proc.stdin.flush()

  def _events(self):
    """Events up to the end of the current request (None: the child died first)."""
    for line in self.proc.stdout:
      if not line.startswith(EVENT):
        continue
      event = json.loads(line[len(EVENT):])
      if event["event"] == "bad_input":
        raise BadInput(event["key"], event["message"])
      if event["event"] == "setup":
        self.setup = {k: v for k, v in event.items() if k != "event"}
        continue
      yield event
      if event["event"] == "done":
        return
    yield None

  def _died(self) -> str:
    self.proc.wait()
    self._err.seek(0)
    log = self._err.read()
    self.logs.append(log)
    self._err.close()
    self.proc = None
    return log

  def compile(self, programs: list) -> Result:
    """Reports of `programs` ([[group, value or None]]), restarting the child past any program that kills it."""
    reports, groups, flops, skip = [], {}, {}, []
    while True:
      if self.proc is None:
        self.start()
      self.proc.stdin.write(json.dumps({"programs": programs, "skip": skip}) + "\n")
      self.proc.stdin.flush()
      started = None
      for event in self._events():
        if event is None:
          log = self._died()
          if started is None:
            raise RuntimeError(f"plan worker exited outside any compile: {_last_message(log)}")
          reports.append(Report(started["name"], started["calls"], error=f"compiler crashed: {_last_message(log)}"))
          skip.append(started["name"])
          break
        if event["event"] == "start":
          started = event
          groups[event["name"]] = event["group"]
        elif event["event"] == "report":
          reports.append(Report(**event["report"]))
          skip.append(event["report"]["name"])
          if "flops" in event:
            flops[event["report"]["name"]] = event["flops"]
          started = None
        elif event["event"] == "done":
          return Result(reports, groups, flops)

  def close(self) -> str:
    """End the child; the native logs of every child this worker ran."""
    if self.proc is not None:
      self.proc.stdin.close()
      self._died()
    return "".join(self.logs)
