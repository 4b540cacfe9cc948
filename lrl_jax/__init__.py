"""lrl_jax: LightningRL post-training of block-diffusion language models (SDAR) in JAX."""

from lrl_jax import console as _console

if (_console.program_module() or "").split(".")[0] == "lrl_jax":  # `python -m lrl_jax.<name>`, before JAX loads
  _console.setup()
