"""Model-independent evaluation: AUP (`aup`), dataset metrics (`aggregate`), paper figures (`paper`), reports.

Nothing here imports jax, so results can be scored, compared and plotted on any machine.
"""
