"""`python -m lrl_jax.convert` refuses what it cannot convert faithfully, in one line, before writing anything."""

import os

from lrl_jax import convert


def test_config_without_mask_token_is_refused(tmp_path, hf_dir_without_mask, capsys):
  """A Qwen3-typed config.json without mask_token_id used to convert without a word (generate and train reject it)."""
  src = hf_dir_without_mask
  assert convert.main([f"--hf_dir={src}", f"--out_dir={tmp_path / 'out'}"]) == 2
  assert capsys.readouterr().err == (f"error: {src / 'config.json'}: no 'mask_token_id'; an SDAR (block diffusion) "
                                     "checkpoint needs one\n")
  assert sorted(os.listdir(tmp_path)) == [src.name]


def test_flag_errors_are_one_line(tmp_path, tiny_hf_dir, capsys):
  for argv, line in (([f"--hf_dir={tiny_hf_dir}", "--out_dir=x", "--dtype=float8"], "error: --dtype: 'float8' is not "
                      "valid"),
                     ([f"--hf_dir={tiny_hf_dir}"], "error: --out_dir: required"),
                     (["--to_hf", "--out_dir=x"], "error: --hf_dir: give --hf_dir=DIR (HF → Orbax) or --to_hf"),
                     ([f"--hf_dir={tmp_path / 'nope'}", "--out_dir=x"], f"error: --hf_dir: {tmp_path / 'nope'}: "
                      "directory not found")):
    assert convert.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(line), err
