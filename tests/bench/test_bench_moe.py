"""`bench moe` (grouped vs all-experts, run on CPU at a tiny size) and `bench moe_dispatch` (the dispatch's collectives
against XLA's choice, compiled deviceless for 8 H200s)."""

import pytest

from lrl_jax.bench import moe, moe_dispatch
from tests.optional import needs_cuda_plugin


def test_bench_moe_tiny(capsys):
  assert moe.main(["--tokens=64", "--hidden=32", "--experts=8", "--top_k=2", "--width=16", "--repeats=1"]) == 0
  out = capsys.readouterr().out
  assert "outputs and 5 gradients equal" in out and "grouped / dense tokens/s:" in out and "FLOP ratio 4x" in out


def test_bench_moe_bad_top_k_is_one_line(capsys):
  assert moe.main(["--experts=4", "--top_k=8"]) == 2
  assert capsys.readouterr().err.strip() == "error: --top_k: 8 exceeds --experts 4"


HLO = """
  %all-gather-start = ((bf16[2,8]{1,0}, f32[4]{0}), (bf16[4,8]{1,0}, f32[8]{0})) all-gather-start(%a, %b), dimensions={0}
  %all-reduce.1 = f32[16,4]{1,0} all-reduce(%c), to_apply=%add
  %all-reduce-start = (f32[2]{0}, s32[3]{0}) all-reduce-start(%d, %e), to_apply=%add
  %reduce-scatter.2 = bf16[3,5]{1,0} reduce-scatter(%f), dimensions={0}
  %fusion = bf16[100]{0} fusion(%all-gather-start), calls=%gathered_fusion
"""


def test_collective_bytes_reads_result_types():
  got = moe_dispatch.collective_bytes(HLO)
  assert got["all-gather"] == 4 * 8 * 2 + 8 * 4  # the results of the async pair, not its operands
  assert got["all-reduce"] == 16 * 4 * 4 + 2 * 4 + 3 * 4
  assert got["reduce-scatter"] == 3 * 5 * 2
  assert got["all-to-all"] == got["collective-permute"] == 0


@pytest.mark.slow  # a deviceless compile at SDAR-30B-A3B's shapes (~30 s); the byte count is tested above
@needs_cuda_plugin
def test_bench_moe_dispatch_moves_less_than_xla_on_h200x8(capsys):
  assert moe_dispatch.main(["--target=h200x8", "--expert=8", "--tokens=256"]) == 0
  out = capsys.readouterr().out
  line = next(row for row in out.splitlines() if row.startswith("XLA's choice / dispatch"))
  ratio = float(line.split("collective bytes: ")[1].split("x")[0])
  assert ratio > 1, out


@pytest.mark.parametrize("flags, message", [
    (["--expert=3"], "error: --expert/--tensor/--fsdp: 3 devices do not divide h200x8's 8"),
    (["--tokens=0"], "error: --tokens"),
    (["--target=h300x8"], "error: --target: h300x8: unknown target"),
])
def test_bench_moe_dispatch_bad_flags_are_one_line(capsys, flags, message):
  assert moe_dispatch.main(flags) == 2
  assert capsys.readouterr().err.strip().startswith(message)
