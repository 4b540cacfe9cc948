"""Multi-process (multi-host) runs: starting `jax.distributed`, this process's share of the work, and exact exchanges
of host values between processes.

Every process runs the same program over one global mesh. Host-side work (decoding, judging, building rows) is split
by `share`; what every process must agree on (per-response rewards, batch totals) is exchanged with `allgather` and
then computed identically everywhere. Arrays that span other processes' devices are never fetched whole: `host`
reads a replicated value from a local copy, `local_rows` this process's rows of a batch. With one process every
helper is the plain single-process operation and nothing is exchanged.

Start: `--distributed` with `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or the environment
variables LRL_COORDINATOR_ADDRESS, LRL_NUM_PROCESSES, LRL_PROCESS_ID), or `--distributed` alone on SLURM, Open MPI
and TPU pods, where jax detects all three. A process whose peer dies stops within about HEARTBEAT_TIMEOUT_S.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import sys
import traceback
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from absl import flags

from lrl_jax import errors
from lrl_jax.errors import UserError

ENV = {"coordinator_address": "LRL_COORDINATOR_ADDRESS", "num_processes": "LRL_NUM_PROCESSES",
       "process_id": "LRL_PROCESS_ID"}
# A peer silent this long counts as dead and jax ends every process (a fatal "Terminating process because the JAX
# distributed service detected fatal errors" log). Above gloo's 30 s wait for a peer to join a new collective, so a
# survivor that reaches a collective first stops on that error, with our one `error:` line.
HEARTBEAT_TIMEOUT_S = 40
SHUTDOWN_TIMEOUT_S = 120  # at exit, how long a process waits for the others to finish
INIT_TIMEOUT_S = 300  # how long the processes have to find each other at start
BARRIER_TIMEOUT_S = 7 * 24 * 3600  # `barrier`: peers may be busy for long (process 0's warm start)


class PeerLostError(UserError):
  """A collective failed because another process of the run died or became unreachable."""


class Settings(NamedTuple):
  """Explicit coordinator settings; all None: jax's cluster auto-detection (SLURM, Open MPI, TPU pods)."""
  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_bool("distributed", False, "multi-process run: call jax.distributed.initialize (explicit settings from "
                    "the three flags below or their LRL_* variables; none: SLURM/Open MPI/TPU auto-detection)",
                    flag_values=fv)
  flags.DEFINE_string("coordinator_address", None, f"HOST:PORT of process 0's coordinator (env "
                      f"{ENV['coordinator_address']})", flag_values=fv)
  flags.DEFINE_integer("num_processes", None, f"processes of the run (env {ENV['num_processes']})", flag_values=fv)
  flags.DEFINE_integer("process_id", None, f"this process, 0..num_processes-1 (env {ENV['process_id']})",
                       flag_values=fv)


def _from_env(name: str, value, environ) -> Any:
  if value is not None or not environ.get(ENV[name]):
    return value
  text = environ[ENV[name]].strip()
  if name == "coordinator_address":
    return text
  try:
    return int(text)
  except ValueError:
    raise UserError(f"{ENV[name]}: {text!r} is not an integer") from None


def settings(distributed: bool, coordinator_address: str | None, num_processes: int | None,
             process_id: int | None, environ=os.environ) -> Settings | None:
  """The checked start settings of the flags (over the LRL_* variables); None for a single-process run."""
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
  if not distributed:
    for name, value in given.items():
      if value is not None:
        raise UserError(f"--{name}: only applies with --distributed")
    return None
  values = {name: _from_env(name, value, environ) for name, value in given.items()}
  if all(v is None for v in values.values()):
    return Settings(None, None, None)
  for name, value in values.items():
    if value is None:
      raise UserError(f"--{name}: required with the other explicit settings (give --coordinator_address, "
                      "--num_processes and --process_id, or none of them for SLURM/Open MPI/TPU auto-detection)")
  address, n, pid = values["coordinator_address"], values["num_processes"], values["process_id"]
  if not re.fullmatch(r"\[?[^\s\[\]]+\]?:\d+", address) or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
    raise UserError(f"--coordinator_address: {address!r} must be HOST:PORT with a port in 1..65535")
  if n < 1:
    raise UserError(f"--num_processes: must be >= 1, got {n}")
  if not 0 <= pid < n:
    raise UserError(f"--process_id: must be in [0, {n - 1}] (--num_processes={n}), got {pid}")
  return Settings(address, n, pid)


def initialize(s: Settings) -> None:
  """`jax.distributed.initialize` with bounded heartbeat/shutdown timeouts; before any other jax call."""
  import jax
  timeouts = dict(initialization_timeout=INIT_TIMEOUT_S, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
                  shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
  try:
    if s.coordinator_address is None:
      jax.distributed.initialize(**timeouts)
    else:
      jax.distributed.initialize(s.coordinator_address, s.num_processes, s.process_id,
                                 cluster_detection_method="deactivate", **timeouts)
  except ValueError as e:  # auto-detection found no cluster: jax asks for the settings it lacks
    if s.coordinator_address is not None:
      raise
    raise UserError(f"--distributed: no SLURM, Open MPI or TPU-pod environment detected ({e}); give "
                    "--coordinator_address, --num_processes and --process_id (or LRL_COORDINATOR_ADDRESS, "
                    "LRL_NUM_PROCESSES, LRL_PROCESS_ID)") from None
  except jax.errors.JaxRuntimeError as e:
    raise UserError(f"--coordinator_address: {s.coordinator_address or 'auto-detected'}: the {s.num_processes or ''} "
                    f"processes did not all connect within {INIT_TIMEOUT_S}s ({_first_line(e)})") from None


# ---- who does what ---------------------------------------------------------------------------------------------------
def count() -> int:
  import jax
  return jax.process_count()


def index() -> int:
  import jax
  return jax.process_index()


def is_main() -> bool:
  """Process 0: the one that writes metrics, summaries and exported models."""
  return index() == 0


def share(num_items: int, process: int | None = None, processes: int | None = None) -> slice:
  """This process's contiguous share of `num_items` (as even as possible; the first processes take one more)."""
  process = index() if process is None else process
  processes = count() if processes is None else processes
  base, extra = divmod(num_items, processes)
  start = process * base + min(process, extra)
  return slice(start, start + base + (process < extra))


# ---- exchanges -------------------------------------------------------------------------------------------------------
def allgather(obj: Any) -> list:
  """Every process's `obj` (any picklable value), in process order; exact (bytes, not float32 devices values)."""
  if count() == 1:
    return [obj]
  from jax.experimental import multihost_utils
  data = np.frombuffer(pickle.dumps(obj), np.uint8)
  sizes = multihost_utils.process_allgather(np.asarray([len(data)], np.int32))[:, 0]
  padded = np.zeros(1 << int(sizes.max() - 1).bit_length(), np.uint8)  # a power of two: few compiled gathers
  padded[:len(data)] = data
  gathered = multihost_utils.process_allgather(padded)
  return [pickle.loads(gathered[p, :int(sizes[p])].tobytes()) for p in range(len(sizes))]


def barrier(name: str) -> None:
  """Wait until every process got here (e.g. while process 0 alone runs the warm start).

  A barrier of the coordination service, not a device collective: gloo gives up on a collective whose first use
  waits more than 30 s for a peer; this one waits BARRIER_TIMEOUT_S, and a dead peer still stops it within about
  HEARTBEAT_TIMEOUT_S.
  """
  if count() > 1:
    import orbax.checkpoint as ocp
    ocp.multihost.sync_global_processes(f"lrl_{name}", timeout=BARRIER_TIMEOUT_S, processes=set(range(count())))


def host(tree: Any) -> Any:
  """Numpy values of replicated arrays (scalars, metrics), read from this process's first copy."""
  return _map(lambda x: np.asarray(x.addressable_data(0)) if hasattr(x, "addressable_data") else np.asarray(x), tree)


def _map(fn: Callable, tree: Any) -> Any:
  import jax
  return jax.tree.map(fn, tree)


def batch_spec(ndim: int):
  from jax.sharding import PartitionSpec
  return PartitionSpec(("data", "fsdp", "expert"), *([None] * (ndim - 1)))  # mesh.BATCH


def put(tree: Any, shardings: Any) -> Any:
  """Arrays placed with `shardings` from host values every process holds whole (and equal), e.g. loaded params."""
  import jax
  if count() == 1:
    return jax.device_put(tree, shardings)

  def one(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(one, tree, shardings)


def global_rows(tree: Any, mesh) -> Any:
  """Global arrays whose rows are every process's local rows (process order), split over (data, fsdp)."""
  import jax
  from jax.sharding import NamedSharding
  return _map(lambda x: jax.make_array_from_process_local_data(NamedSharding(mesh, batch_spec(np.ndim(x))),
                                                               np.asarray(x)), tree)


def local_rows(tree: Any, mesh) -> Any:
  """This process's rows of global batch arrays, as numpy (the inverse of `global_rows`)."""
  if count() == 1:
    return _map(np.asarray, tree)
  from jax.experimental import multihost_utils
  return _map(lambda x: np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, batch_spec(x.ndim))),
              tree)


def local_view(tree: Any, mesh) -> Any:
  """Arrays on `mesh` replicated over its data axes, as arrays on this process's part of it (`mesh.local_mesh`),
  sharing their buffers: for process-local programs such as the rollout engine."""
  if count() == 1:
    return tree
  from jax.experimental import multihost_utils
  return _map(lambda x: multihost_utils.global_array_to_host_local_array(x, mesh, x.sharding.spec), tree)


def fetch(tree: Any) -> Any:
  """Whole numpy arrays of a sharded pytree on every process (a collective with more than one process)."""
  if count() == 1:
    import jax
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


class HostSlices:
  """A sharded array read to host numpy piece by piece: `x[index]` gathers only that piece (a collective when more
  than one process holds shards), so a writer streaming layer by layer never holds the whole array."""

  def __init__(self, array):
    self._array = array
    self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)

  def __getitem__(self, index) -> np.ndarray:
    if isinstance(index, int):  # a layer of a stacked tensor: one compiled take per array shape, not per layer
      return np.asarray(fetch(_take()(self._array, np.int32(index))))
    if isinstance(index, tuple) and all(isinstance(i, int) for i in index):  # (layer, expert) of an MoE leaf
      return np.asarray(fetch(_take_many()(self._array, np.asarray(index, np.int32))))
    return np.asarray(fetch(self._array[index]))


@functools.lru_cache(maxsize=None)
def _take():
  """x[i] along the first axis with i traced (compiled once per array shape and sharding)."""
  import jax
  return jax.jit(lambda x, i: jax.lax.dynamic_index_in_dim(x, i, keepdims=False))


@functools.lru_cache(maxsize=None)
def _take_many():
  """x[i0, i1, ...] of the leading axes with the indices traced (compiled once per array shape and sharding)."""
  import jax
  return jax.jit(lambda x, i: jax.lax.dynamic_slice(x, tuple(i) + (0,) * (x.ndim - i.shape[0]),
                                                    (1,) * i.shape[0] + x.shape[i.shape[0]:]).reshape(
                                                        x.shape[i.shape[0]:]))


def host_slices(tree: Any) -> Any:
  """`HostSlices` of every array of a sharded pytree (for the streaming writers of weights/hf.py)."""
  return _map(HostSlices, tree)


# ---- failing fast ----------------------------------------------------------------------------------------------------
_PEER_SIGNS = ("gloo", "connection reset", "connection refused", "heartbeat", "coordination service", "unavailable",
               "barrier", "socket closed", "broken pipe")


def _first_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return text if len(text) <= 300 else text[:300] + " ..."


def as_peer_lost(e: BaseException) -> BaseException:
  """A runtime error of a failed collective as a PeerLostError (one line); anything else unchanged."""
  import jax
  if count() > 1 and isinstance(e, jax.errors.JaxRuntimeError) and any(s in str(e).lower() for s in _PEER_SIGNS):
    return PeerLostError(f"distributed: process {index()} of {count()} lost contact with another process "
                         f"({_first_line(e)}); rerun every process to resume from the last checkpoint")
  return e


def exit_now(e: BaseException, cleanup: Sequence[Callable[[], None]] = ()) -> None:
  """In a multi-process run, end this process at once after a failure: one `error:` line (exit 2) for a user error
  or a lost peer, else the traceback (exit 1). Skipping jax's exit barrier keeps a failed process from waiting on
  peers that wait on it; they see it gone and stop too. With one process, return (the caller re-raises)."""
  if count() == 1:
    return
  e = as_peer_lost(e)
  for fn in cleanup:
    try:
      fn()
    except Exception:  # noqa: BLE001 -- best effort: the process ends either way
      pass
  if errors.is_user_error(e):
    sys.stdout.flush()
    sys.stderr.write(f"error: {errors.one_line(e)}\n")
    code = 2
  else:
    traceback.print_exception(e)
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)
