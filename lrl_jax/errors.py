"""The base of every user error (bad flag, config value, input file or checkpoint) and the test for one; only the
standard library, so any stage can raise one and every entry point reports it as one `error: <key or file>: <what is
wrong>` line (lrl_jax/cli.py)."""

from __future__ import annotations

import errno
import sys

# Environment errors a user can fix (a full disk, a read-only or forbidden path): one line, not a traceback.
USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR,
               errno.ENOTDIR, errno.EEXIST, errno.ENOENT)

# User-error types of stages, by module: a module that was never imported cannot have raised its error, so the CLI
# never imports a stage (and JAX) just to catch it.
_STAGE_ERRORS = (("lrl_jax.model.config", "ConfigError"), ("lrl_jax.decode.config", "DecodeError"),
                 ("lrl_jax.weights.hf", "WeightsError"), ("lrl_jax.data.formats", "DataFormatError"),
                 ("lrl_jax.data.download", "DownloadError"))


class UserError(ValueError):
  """Bad input the user can fix; the message starts with the config key, flag or file it is about."""


def user_error_types() -> tuple[type[BaseException], ...]:
  out = [UserError]
  for module, name in _STAGE_ERRORS:
    if module in sys.modules:
      out.append(getattr(sys.modules[module], name))
  return tuple(out)


def is_user_error(e: BaseException) -> bool:
  if isinstance(e, OSError) and not isinstance(e, user_error_types()):
    return (e.errno in USER_ERRNOS and e.filename is not None) or e.errno in (errno.ENOSPC, errno.EDQUOT)
  return isinstance(e, user_error_types())


def one_line(e: BaseException) -> str:
  """`<key or file>: <what is wrong>` of a user error, on one line."""
  if isinstance(e, OSError) and e.strerror and not isinstance(e, user_error_types()):
    text = f"{e.filename}: {e.strerror}" if e.filename is not None else e.strerror
  else:
    text = str(e)
  return " ".join(text.split())
