"""`python -m lrl_jax.generate`: end to end on a tiny checkpoint and every bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from lrl_jax import generate
from lrl_jax.decode import Decoder, DecodeConfig
from lrl_jax.weights import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORD_FIELDS = ("prompt_ids", "response_ids", "step_map", "num_forwards", "forwards_total", "truncated", "text")


def _write(path, lines):
  with open(path, "w") as f:
    f.write("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
  return str(path)


def _read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_end_to_end_subprocess(tiny_hf_dir, tmp_path):
  """Text prompts, id prompts, passthrough fields; greedy output equals the Decoder called directly."""
  rows = [{"prompt": "What is 2+2?", "id": 1}, {"prompt_ids": [5, 6, 7, 8, 9], "meta": {"tags": ["x"]}},
          {"prompt": "<|im_start|>user\nhi<|im_end|>\n", "id": 3}]
  src, out = _write(tmp_path / "in.jsonl", rows), str(tmp_path / "out.jsonl")
  cmd = [sys.executable, "-m", "lrl_jax.generate", f"--checkpoint={tiny_hf_dir}", f"--input={src}",
         f"--output={out}", "--greedy", "--max_new_tokens=10", "--threshold=0.5", "--batch_size=2"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("prompts=3 tokens=") and "TPF=" in proc.stdout and "after warm-up" in proc.stdout
  assert "3/3" in proc.stderr  # the progress bar
  got = _read(out)
  assert [{k: g[k] for k in r} for g, r in zip(got, rows)] == rows  # passthrough unchanged
  assert all(set(RECORD_FIELDS) <= set(g) and "decoded_ids" not in g and "logprobs" not in g for g in got)
  cfg, params, tok = load_checkpoint(tiny_hf_dir)
  assert got[0]["prompt_ids"] == tok.encode(rows[0]["prompt"], add_special_tokens=False)
  assert got[2]["prompt_ids"][0] == 1  # <|im_start|> is encoded as its special id
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=10, threshold=0.5, stop_ids=(2, 0))
  direct = Decoder(cfg, dcfg, batch_size=2, tokenizer=tok).generate(params, [g["prompt_ids"] for g in got])
  for g, d in zip(got, direct.to_json_records()):
    assert {k: g[k] for k in RECORD_FIELDS} == {k: d[k] for k in RECORD_FIELDS}
    assert len(g["response_ids"]) <= 10 and g["num_forwards"] == len(set(g["step_map"]))


def test_optional_fields_and_sampling(tiny_hf_dir, tmp_path, capsys):
  src = _write(tmp_path / "in.jsonl", [{"prompt_ids": [5, 6, 7]}, {"prompt": "abc", "prompt_ids": [9, 10]}])
  out = str(tmp_path / "out.jsonl")
  argv = [f"--checkpoint={tiny_hf_dir}", f"--input={src}", f"--output={out}", "--max_new_tokens=6", "--with_logprobs",
          "--with_trajectory", "--stop_ids=none", "--temperature=0.8", "--top_k=20", "--seed=4", "--attn_impl=auto"]
  assert generate.main(argv) == 0
  got = _read(out)
  assert got[1]["prompt_ids"] == [9, 10] and got[1]["prompt"] == "abc"  # prompt_ids wins over prompt
  for g in got:
    assert len(g["response_ids"]) == 6 and g["truncated"] and len(g["logprobs"]) == 6
    assert len(g["decoded_ids"]) >= 6 and len(g["decoded_step_map"]) == len(g["decoded_ids"])
  assert not [f for f in os.listdir(tmp_path) if "partial" in f]
  assert "prompts=2 tokens=12" in capsys.readouterr().out


def _no_mask_dir(src, dst):
  shutil.copytree(src, dst)
  with open(os.path.join(dst, "config.json")) as f:
    raw = json.load(f)
  raw.pop("mask_token_id")
  raw["model_type"] = "qwen3"
  with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(raw, f)
  return dst


def _no_tokenizer_dir(src, dst):
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json", "vocab.json"))
  return dst


GOOD = {"prompt_ids": [5, 6]}
BAD_CASES = {
    "strategy": ([GOOD], ["--strategy=fastest"], None, "strategy: must be one of ('sequential', 'low_confidence_static', "
                 "'low_confidence_dynamic', 'entropy_bounded'), got 'fastest'"),
    "block_size": ([GOOD], ["--block_size=3"], None, "block_size: 3 and the model's block_size=4 do not divide"),
    "empty_text": ([GOOD, {"prompt": ""}], [], None, "in.jsonl:2: field 'prompt' is empty"),
    "empty_ids": ([{"prompt_ids": []}], [], None, "in.jsonl:1: field 'prompt_ids' is empty"),
    "too_long": ([{"prompt_ids": [5] * 4093}], ["--max_new_tokens=4"], None,
                 "in.jsonl:1: field 'prompt_ids' has 4093 tokens; with --max_new_tokens=4 that exceeds the model's "
                 "max_position_embeddings=4096"),
    "vocab": ([{"prompt_ids": [5, 500]}], [], None, "in.jsonl:1: field 'prompt_ids' has token id 500 outside"),
    "ids_type": ([{"prompt_ids": "5 6"}], [], None, "in.jsonl:1: field 'prompt_ids' must be a list of integers"),
    "malformed": ([GOOD, GOOD, '{"prompt": "ab"'], [], None, "in.jsonl:3: malformed JSON"),
    "not_object": (["[1, 2]"], [], None, "in.jsonl:1: expected a JSON object, got list"),
    "missing_field": ([GOOD, {"question": "hi"}], [], None, "in.jsonl:2: missing field 'prompt' (or 'prompt_ids')"),
    "no_mask": ([GOOD], [], _no_mask_dir, "no 'mask_token_id'"),
    "no_tokenizer": ([{"prompt": "hi"}], [], _no_tokenizer_dir, "in.jsonl:1: field 'prompt' is text but the "
                     "checkpoint has no tokenizer"),
    "no_checkpoint": ([GOOD], [], lambda src, dst: dst, "/ckpt: no such directory"),
    "empty_file": ([""], [], None, "in.jsonl: no prompts"),
    "steps": ([GOOD], ["--steps=9"], None, "steps: must be in [0, 4], got 9"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input(tiny_hf_dir, tmp_path, capsys, case):
  lines, flags, make_dir, message = BAD_CASES[case]
  checkpoint = make_dir(tiny_hf_dir, str(tmp_path / "ckpt")) if make_dir else tiny_hf_dir
  src, out = _write(tmp_path / "in.jsonl", lines), tmp_path / "out" / "out.jsonl"
  out.parent.mkdir()
  assert generate.main([f"--checkpoint={checkpoint}", f"--input={src}", f"--output={out}", *flags]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
  assert os.listdir(out.parent) == []


@pytest.mark.parametrize("flag, message", [
  ("--stop_ids=1,x", "error: --stop_ids: '1,x' must be comma-separated integers"),
  ("--top_k=many", "error: --top_k: 'many' is not an integer"),
  ("--dtype=float8", "error: --dtype: 'float8' is not valid"),
  ("--bogus=1", "error: --bogus: unknown flag"),
])
def test_bad_flag_value_exits_2(tiny_hf_dir, tmp_path, capsys, flag, message):
  assert generate.main([f"--checkpoint={tiny_hf_dir}", "--input=x", "--output=y", flag]) == 2
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and err[0].startswith(message), err


def test_slots_are_sized_by_the_prompts(tiny_model, monkeypatch, tmp_path, tiny_hf_dir):
  """generate sizes the slots by its longest prompt (a power of two), not the 512-token default: one page-table
  bucket to compile for short prompts instead of six."""
  from lrl_jax.decode import prompt_capacity
  assert [prompt_capacity(p) for p in ([[1]], [[1] * 5, [1] * 3], [[1] * 8], [[1] * 9])] == [1, 8, 8, 16]
  cfg, _, tok = tiny_model
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=10)
  assert len(Decoder(cfg, dcfg, batch_size=2, tokenizer=tok).scheduler.buckets()) == 6
  built = []
  monkeypatch.setattr(generate, "Decoder", lambda *a, **k: built.append(Decoder(*a, **k)) or built[-1])
  src = _write(tmp_path / "in.jsonl", [{"prompt_ids": [5, 6, 7, 8, 9]}, {"prompt_ids": [5, 6]}])
  assert generate.main([f"--checkpoint={tiny_hf_dir}", f"--input={src}", f"--output={tmp_path / 'o.jsonl'}",
                        "--greedy", "--max_new_tokens=10"]) == 0
  assert built[0].max_prompt_len == 8 and len(built[0].scheduler.buckets()) == 1
