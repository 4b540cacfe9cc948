"""The command-line convention every entry point shares.

absl flags (`--name=value`, `--flag`/`--noflag`), an ml_collections config file (`--config=FILE[:ARG]` plus
`--config.a.b=v` overrides) where a program has a config, and for a user error (bad flag, config value, input file,
checkpoint, full disk) exactly one line `error: <key or file>: <what is wrong>` on stderr and exit code 2. A traceback
means a bug; `--debug` shows it for user errors too.
"""

from __future__ import annotations

import difflib
import os
import runpy
import sys
import types
from collections.abc import Callable

from absl import flags

from lrl_jax import console
from lrl_jax.errors import UserError, is_user_error, one_line  # is_user_error: re-exported for the entry points


def _flag_error(e: flags.Error) -> str:
  """absl's parse errors as `--flag: problem` (`config.a.b: problem` for a config override)."""
  if isinstance(e, flags.UnrecognizedFlagError):
    return f"--{e.flagname}: unknown flag"
  text = str(e)
  if not (text.startswith("flag --") and ": " in text):
    return text
  head, _, reason = text[len("flag "):].partition(": ")  # "flag --x=v: reason"
  name, _, value = head.partition("=")
  if reason.startswith(f"Flag {name} must have a value other than None"):
    return f"{name}: required"
  if "." in name:  # --config.a.b: a config override
    name = name[2:]
  if reason.startswith("invalid literal for int()"):
    return f"{name}: {value!r} is not an integer"
  if reason.startswith("could not convert string to float"):
    return f"{name}: {value!r} is not a number"
  return f"{name}: {value!r} is not valid ({reason})"


def _config_paths(argv: list[str], names: tuple[str, ...]) -> dict[str, str]:
  """The config-file flag values in argv, by flag name (`--config=F`, `--config F`)."""
  out = {}
  for i, arg in enumerate(argv):
    for name in names:
      if arg.startswith(f"--{name}="):
        out[name] = arg.split("=", 1)[1]
      elif arg == f"--{name}" and i + 1 < len(argv):
        out[name] = argv[i + 1]
  return out


def _keys(config, prefix: str = "") -> list[str]:
  out = []
  for k, v in config.items():
    out.append(prefix + k)
    if hasattr(v, "items") and hasattr(v, "lock"):
      out.extend(_keys(v, f"{prefix}{k}."))
  return out


def check_config_file(name: str, spec: str, argv: list[str]) -> None:
  """The config file exists and loads, and every `--NAME.KEY=v` override names one of its keys (else the closest)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise UserError(f"{path}: config file not found (--{name})")
  try:
    with console.without_notices():  # a config file may import the package (and JAX): no plugin notices
      get_config = runpy.run_path(path)["get_config"]
      config = get_config(arg) if arg else get_config()
  except KeyError:
    raise UserError(f"{path}: defines no get_config()") from None
  except UserError:
    raise
  except Exception as e:  # a config file is code the user wrote; show what it raised
    raise UserError(f"{path}: loading the config failed: {type(e).__name__}: {e}") from e
  keys = _keys(config)
  for arg in argv:
    if arg.startswith(f"--{name}.") and "=" in arg:
      key = arg[len(f"--{name}."):].split("=", 1)[0]
      if key not in keys:
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"{name}.{key}: unknown config key in {path}{hint}")


def parse(define: Callable[[flags.FlagValues], None], argv: list[str], prog: str,
          config_flags: tuple[str, ...] = ()) -> flags.FlagValues:
  """Flags defined by `define` (plus `--debug`) parsed from argv; a bad flag or config file raises UserError.

  `config_flags` names the flags `define` made with `ml_collections.config_flags.DEFINE_config_file`.
  """
  fv = flags.FlagValues()
  saved, sys.argv = sys.argv, [prog, *argv]  # config_flags reads its overrides from sys.argv while parsing
  try:
    define(fv)
    flags.DEFINE_bool("debug", False, "show the traceback of a user error", flag_values=fv)
    for name, spec in _config_paths(argv, config_flags).items():
      check_config_file(name, spec, argv)
    try:
      rest = fv([prog, *argv])
    except flags.Error as e:
      raise UserError(_flag_error(e)) from e
  finally:
    sys.argv = saved
  if len(rest) > 1:
    raise UserError(f"{rest[1]}: unexpected argument (flags are --name=value)")
  return fv


def namespace(fv: flags.FlagValues) -> types.SimpleNamespace:
  """Parsed flags as attributes (`args.batch_size`), for code written against an argument namespace."""
  return types.SimpleNamespace(**fv.flag_values_dict())


def usage(define: Callable[[flags.FlagValues], None], prog: str, doc: str) -> str:
  fv = flags.FlagValues()
  define(fv)
  flags.DEFINE_bool("debug", False, "show the traceback of a user error", flag_values=fv)
  return f"usage: {prog} [flags]\n\n{doc.strip()}\n\nflags:\n{fv.get_help(include_special_flags=False)}"


def call(body: Callable[[flags.FlagValues | None], int | None], fv: flags.FlagValues | None,
         debug: bool = False) -> int:
  """`body(fv)`'s exit code; a user error prints one `error:` line and gives 2 (re-raised when `debug`)."""
  try:
    return body(fv) or 0
  except Exception as e:  # noqa: BLE001 -- sorted into user errors (one line) and bugs (traceback)
    if debug or not is_user_error(e):
      raise
    line = f"error: {one_line(e)}\n"
    if console.error_fd() is not None:
      os.write(console.error_fd(), line.encode())
    else:
      print(line, end="", file=sys.stderr)
    return 2


def run(define: Callable[[flags.FlagValues], None], body: Callable[[flags.FlagValues], int | None],
        argv: list[str] | None, prog: str, doc: str = "", config_flags: tuple[str, ...] = ()) -> int:
  """Parse flags, call `body(flags)` and return its exit code; a user error prints one `error:` line and returns 2."""
  argv = sys.argv[1:] if argv is None else list(argv)
  if "--help" in argv or "-h" in argv or "--helpfull" in argv:
    print(usage(define, prog, doc))
    return 0
  debug = any(a == "--debug" or a.lower() in ("--debug=true", "--debug=1") for a in argv)
  if not flags.FLAGS.is_parsed():  # libraries that read absl's global flags see their defaults
    flags.FLAGS.mark_as_parsed()
  return call(lambda _: body(parse(define, argv, prog, config_flags)), None, debug)


def program(main: Callable[[], int]) -> None:
  """Run an entry point's `main()` as the process and end with its exit code. After a user error the process ends at
  once (output flushed), so threads a failed write left behind (Orbax, tensorstore) cannot print past it."""
  console.mark_program()
  code = main()
  if code == 0:
    sys.exit(0)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)
