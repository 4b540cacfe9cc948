"""The base of every user error (bad flag, config value, input file or checkpoint); no dependencies, so any stage can
raise one and every entry point reports it as one `error: <key or file>: <what is wrong>` line (lrl_jax/cli.py)."""


class UserError(ValueError):
  """Bad input the user can fix; the message starts with the config key, flag or file it is about."""
