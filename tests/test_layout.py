"""The house's one-way streets (ARCHITECTURE.md, docs/DESIGN.md): stages never import entry points, `model` imports
no other stage, and `rewards`, `data` and `evaluation` (except its sweep) never load JAX."""

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lrl_jax"
ENTRY_POINTS = {"lrl_jax.train", "lrl_jax.sft", "lrl_jax.eval", "lrl_jax.generate", "lrl_jax.convert",
                "lrl_jax.reward", "lrl_jax.bench.decode", "lrl_jax.bench.train", "lrl_jax.bench.reward"}
STAGES = ("model", "weights", "decode", "data", "rewards", "evaluation", "rl", "parallel", "plan")
NO_JAX = ("lrl_jax.rewards", "lrl_jax.data", "lrl_jax.evaluation")
NOT_IMPORTED = ("lrl_jax.evaluation.sweep", "lrl_jax.rewards.harness")  # the JAX sweep; a script the sandbox runs


def _modules():
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    yield name, path


def _imports(name: str, path: pathlib.Path) -> set[str]:
  """Every lrl_jax module `path` imports, anywhere in it (function-level imports included)."""
  package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
      out.add(base)
      out |= {f"{base}.{a.name}" for a in node.names}  # `from lrl_jax import train` names a module
  return {m for m in out if m.startswith("lrl_jax")}


def _is_entry_point(module: str) -> bool:
  return module in ENTRY_POINTS or module.endswith(".__main__")


def _stage_of(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_stages_never_import_entry_points():
  bad = []
  for name, path in _modules():
    if _stage_of(name) and not name.endswith("__main__"):
      bad += [f"{name} imports {m}" for m in _imports(name, path) if _is_entry_point(m)]
  assert not bad, bad


def test_model_imports_no_other_stage():
  bad = []
  for name, path in _modules():
    if _stage_of(name) == "model":
      bad += [f"{name} imports {m}" for m in _imports(name, path) if _stage_of(m) not in (None, "model")]
  assert not bad, bad


def test_the_checker_sees_an_entry_point_import(tmp_path):
  """The AST scan catches the import that used to exist (rl/trainer.py importing the sft CLI)."""
  path = tmp_path / "trainer.py"
  path.write_text("def f():\n  from lrl_jax import sft\n  from .. import eval\n")
  found = _imports("lrl_jax.rl.trainer", path)
  assert "lrl_jax.sft" in found and "lrl_jax.eval" in found and any(map(_is_entry_point, found))


def test_jax_free_packages_do_not_load_jax():
  modules = [name for name, _ in _modules() if name.startswith(NO_JAX) and name not in NOT_IMPORTED
             and not name.endswith("__main__")]
  code = ("import importlib, sys\n"
          f"for m in {modules!r}:\n    importlib.import_module(m)\n"
          "heavy = sorted(m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules)\n"
          "print(','.join(heavy))")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "", f"{done.stdout.strip()} loaded by {modules}"
