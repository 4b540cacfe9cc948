"""Benchmarks: `python -m lrl_jax.bench <name> [flags]`, each printing a table and a ratio against a same-run reference."""
