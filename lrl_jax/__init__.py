"""lrl_jax: LightningRL post-training of block-diffusion language models (SDAR) in JAX."""
