"""Moved: reading a run directory is lrl_jax/weights/run_dir.py, writing one lrl_jax/run/checkpoints.py. This name
stays only for wiring.py's import until wiring moves into lrl_jax/run/ (then it goes)."""

from lrl_jax.weights.run_dir import model_files_dir, model_params

__all__ = ["model_files_dir", "model_params"]
