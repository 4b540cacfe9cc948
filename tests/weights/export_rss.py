"""Host memory of saving a sharded model from two processes (8 CPU devices, 4 each, fsdp=8): one process of
`python -m tests.weights.export_rss PROCESS PORT OUT [hidden layers]` prints one JSON line with its resident set
(psutil, sampled every 5 ms) before and at the peak of: the HF export (streamed, `run.checkpoints.export_hf_dir`),
W/final (each process its shards, `run.checkpoints.write_final_dir`) and, for comparison, gathering the whole model to
host (`multihost.fetch`, what both did before issue 21). Run by test_export_memory.py.
"""

import json
import os
import sys
import threading
import time

import jax
import psutil


class PeakRss:
  """The largest resident set of this process while the block runs."""

  def __enter__(self):
    self._proc, self._stop = psutil.Process(), threading.Event()
    self.before = self.peak = self._proc.memory_info().rss
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    return self

  def _sample(self):
    while not self._stop.wait(0.005):
      self.peak = max(self.peak, self._proc.memory_info().rss)

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, self._proc.memory_info().rss)


def main(process: int, port: int, out: str, hidden: int = 1536, layers: int = 8) -> None:
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process)
  from lrl_jax.run.checkpoints import export_hf_dir, write_final_dir
  from lrl_jax.model import init_params
  from lrl_jax.parallel import mesh as mesh_lib, multihost
  from lrl_jax.weights import tiny
  from lrl_jax.weights.checkpoint import write_side_files

  cfg = tiny.tiny_config(hidden_size=hidden, num_layers=layers, num_heads=hidden // 128, num_kv_heads=hidden // 128,
                         head_dim=128, intermediate_size=hidden * 8 // 3 // 128 * 128, vocab_size=32768)
  mesh = mesh_lib.make_mesh(1, 8, 1)
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  params = jax.jit(lambda: init_params(cfg, jax.random.key(0)),
                   out_shardings=mesh_lib.param_shardings(cfg, shapes, mesh))()
  jax.block_until_ready(params)
  model_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  src = os.path.join(out, f"src{process}")
  os.makedirs(src, exist_ok=True)
  write_side_files(src, None, cfg)
  result = {"process": process, "model_bytes": model_bytes}
  for name, save in (("export", lambda: export_hf_dir(params, cfg, os.path.join(out, "hf"), src)),
                     ("final", lambda: write_final_dir(params, os.path.join(out, "final"), src)),
                     ("gather", lambda: multihost.fetch(params))):
    multihost.barrier(f"rss_{name}")
    with PeakRss() as rss:
      start = time.perf_counter()
      kept = save()
      seconds = time.perf_counter() - start
    del kept
    result[name] = {"before": rss.before, "peak": rss.peak, "seconds": seconds}
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], *(int(a) for a in sys.argv[4:]))
