"""Variants × seeds of the train CLI from shared warm starts, scheduled over cores, aggregated into one table.

`python -m lrl_jax.experiments --config configs/compare.py --workdir W` (see `__main__`): `plan` turns the config
into tasks, `scheduler` runs them as pinned subprocesses, `table` writes the mean ± std table and the frontier plot.
"""
