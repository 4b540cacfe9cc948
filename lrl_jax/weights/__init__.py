"""Model weights: HF safetensors ⇄ params ⇄ Orbax, and loading either kind of model directory."""

from lrl_jax.weights.checkpoint import (is_hf_dir, is_orbax_dir, load_checkpoint, load_params, load_tokenizer,
                                        write_hf_dir, write_orbax_dir)
from lrl_jax.weights.hf import WeightsError

__all__ = ["is_hf_dir", "is_orbax_dir", "load_checkpoint", "load_params", "load_tokenizer", "write_hf_dir",
           "write_orbax_dir", "WeightsError"]
