"""Imports go one way (docs/DESIGN.md, "Layers"): no cycle between modules of lrl_jax, nor between its top-level
units (lrl_jax.X for each subpackage or module X); each unit imports only units of its own or lower layers; entry
points are imported by no stage; `rewards`, `data` and `evaluation` (but its sweep) never load JAX. Function-level
imports count. Read from the source (AST), so nothing is imported, except by the JAX-free check."""

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lrl_jax"


def _modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted(root.rglob("*.py")):
    parts = path.relative_to(root.parent).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def _imported(name: str, path: pathlib.Path) -> set[str]:
  """Every lrl_jax name `path` imports anywhere in it: `from a import b` names `a` and `a.b` (b may be a module);
  `importlib.import_module("lrl_jax.x")` with a literal name counts too."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      out |= {base} | {f"{base}.{a.name}" for a in node.names}
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
          and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
      out.add(node.args[0].value)
  return {m for m in out if m == "lrl_jax" or m.startswith("lrl_jax.")}


def import_graph(root: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
  """Module -> the lrl_jax modules it imports (a name resolved to the longest module prefix it has). A module's
  import of its own ancestor packages is left out: Python runs those first whatever the module imports."""
  modules = _modules(root)

  def resolve(name: str) -> str:
    while name not in modules:
      name = name.rpartition(".")[0]
    return name

  graph = {}
  for name, path in modules.items():
    targets = {resolve(m) for m in _imported(name, path)}
    graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
  return graph


def unit_of(module: str) -> str:
  return ".".join(module.split(".")[:2])


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
  """Top-level unit -> the units its modules import (the package root lrl_jax itself is no unit)."""
  out = {}
  for name, targets in graph.items():
    if name == "lrl_jax":
      continue
    out.setdefault(unit_of(name), set()).update(unit_of(t) for t in targets if t != "lrl_jax")
  return {u: {t for t in ts if t != u} for u, ts in out.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one node (Tarjan, iterative), each sorted."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, iter(sorted(graph.get(start, ()))))]
    index[start] = low[start] = len(index)
    stack.append(start)
    on_stack.add(start)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = len(index)
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph.get(child, ())))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1:
          out.append(sorted(component))
  return out


def _explain(graph: dict[str, set[str]], component: list[str], of=lambda m: m) -> list[str]:
  members = set(component)
  return sorted(f"{m} -> {t}" for m, ts in graph.items() if of(m) in members for t in ts
                if of(t) in members and of(t) != of(m))


# Top-level units, lowest first. A unit may import units of its own layer or below (never above); `__main__`
# modules and the modules of the last layer are entry points, which nothing imports.
LAYERS = (
    ("errors", "files", "console", "checks", "defaults"),  # no stage: a config file loads without JAX
    ("kernels", "data", "rewards"),  # attention backends (JAX only); data and judging (no JAX)
    ("model",),  # the Flax model over the kernels
    ("parallel", "weights", "decode"),
    ("rl", "evaluation", "config_parts"),  # the pure RL pieces and the learner; eval sweeps; config -> typed parts
    ("run",),  # the training application: wiring, validation, loop, checkpoints, warm start
    ("cli",),  # the command-line convention (flags, one `error:` line), for entry points and tools only
    ("plan", "bench", "experiments"),  # tools over a training run
    ("train", "sft", "eval", "generate", "convert", "reward"),  # entry points
)
ENTRY_POINTS = set(LAYERS[-1])
NO_JAX = ("lrl_jax.rewards", "lrl_jax.data", "lrl_jax.evaluation")
NOT_IMPORTED = ("lrl_jax.evaluation.sweep", "lrl_jax.rewards.harness")  # the JAX sweep; a script the sandbox runs


def _layer(unit: str) -> int:
  return next(i for i, names in enumerate(LAYERS) if unit.removeprefix("lrl_jax.") in names)


def _is_entry_point(module: str) -> bool:
  return module.endswith(".__main__") or module.removeprefix("lrl_jax.") in ENTRY_POINTS


def test_every_unit_has_a_layer():
  units = set(unit_graph(import_graph()))
  listed = {f"lrl_jax.{n}" for names in LAYERS for n in names}
  assert units <= listed, sorted(units - listed)


def test_units_import_only_their_layer_or_below():
  graph = import_graph()
  bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if m != "lrl_jax" and not m.endswith(".__main__")
               for t in ts if t != "lrl_jax" and _layer(unit_of(t)) > _layer(unit_of(m)))
  assert not bad, bad


def test_no_module_imports_an_entry_point():
  graph = import_graph()
  bad = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts if _is_entry_point(t))
  assert not bad, bad


def test_jax_free_packages_do_not_load_jax():
  modules = [m for m in import_graph() if m.startswith(NO_JAX) and m not in NOT_IMPORTED and not _is_entry_point(m)]
  code = ("import importlib, sys\n"
          f"for m in {modules!r}:\n    importlib.import_module(m)\n"
          "heavy = sorted(m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules)\n"
          "print(','.join(heavy))")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "", f"{done.stdout.strip()} loaded by {modules}"


def test_a_config_file_loads_without_jax():
  code = ("import runpy, sys\nrunpy.run_path('configs/demo.py')['get_config']()\n"
          "print(','.join(sorted(m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules)))")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=120)
  assert done.returncode == 0 and done.stdout.strip() == "", (done.stdout, done.stderr[-2000:])


def test_no_cycle_between_modules():
  graph = import_graph()
  found = cycles(graph)
  assert not found, [_explain(graph, c) for c in found]


def test_no_cycle_between_top_level_units():
  graph = import_graph()
  found = cycles(unit_graph(graph))
  assert not found, [_explain(graph, c, unit_of) for c in found]


def _package(tmp_path, sources: dict[str, str]):
  """A synthetic `lrl_jax` package under tmp_path: its __init__.py and each relative path's source; its root."""
  root = tmp_path / "lrl_jax"
  for path, text in {"__init__.py": "", **sources}.items():
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
  return root


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
  """A cycle made only by a function-level relative import, and one through import_module, are both found."""
  graph = import_graph(_package(tmp_path, {"a/__init__.py": "", "a/x.py": "from lrl_jax.b import y\n",
                                            "b.py": "def f():\n  from .a import x\n",
                                            "c.py": "import importlib\nimportlib.import_module('lrl_jax.d')\n",
                                            "d.py": "def g():\n  from lrl_jax import c\n"}))
  assert cycles(graph) == [["lrl_jax.a.x", "lrl_jax.b"], ["lrl_jax.c", "lrl_jax.d"]]
  assert cycles(unit_graph(graph)) == [["lrl_jax.a", "lrl_jax.b"], ["lrl_jax.c", "lrl_jax.d"]]


def test_the_layer_check_sees_an_upward_lazy_import(tmp_path):
  """The import that used to exist, a stage importing an entry point inside a function, breaks two rules."""
  graph = import_graph(_package(tmp_path, {"rl/__init__.py": "", "rl/trainer.py": "def f():\n  from .. import sft\n",
                                            "sft.py": ""}))
  assert graph["lrl_jax.rl.trainer"] == {"lrl_jax.sft"}
  assert _layer(unit_of("lrl_jax.sft")) > _layer(unit_of("lrl_jax.rl.trainer")) and _is_entry_point("lrl_jax.sft")
