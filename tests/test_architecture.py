"""The package structure, read from the source (AST only, nothing imported).

src/erljax is cut into subpackages by role, in layers. A module may import
from its own layer and the layers below it, never from one above; no two
modules import each other, directly or round a loop (also not through a
package's __init__, which every import of a submodule runs first); no
module is over MAX_MODULE_LINES lines and no function over
MAX_FUNCTION_LINES, apart from the flat config listings in LISTINGS.
docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

SRC = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "..", "src", "erljax"
)
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
# Functions that are one flat listing of config keys: long, and clearer
# whole than cut up.
LISTINGS = ("erljax.config.defaults.default",)

# The layers, lowest first, each with the modules it holds (a name holds
# itself and every module below it, but "erljax" only itself; the longest
# name that fits decides).
LAYERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
  ("package", ("erljax",)),  # erljax/__init__.py: a docstring only
  # Devices, processes, the compile cache, threads.
  ("runtime", ("erljax.runtime",)),
  # Networks, losses and updates of the RL agents, the replay buffer.
  ("agents", ("erljax.agents",)),
  # Tasks, the vectorized env, whole episodes, the evaluator.
  ("envs", ("erljax.envs",)),
  # Frames: MuJoCo on the host, ray casting in JAX, GIFs and grids.
  ("vision", ("erljax.vision",)),
  # Who labels segments: scripted, pixel, VLMs over HTTP.
  ("raters", ("erljax.raters",)),
  # The reward learned from ratings: loss, model, queries, learner.
  ("rewards", ("erljax.rewards",)),
  # Defaults and start-up checks of every config key.
  ("config", ("erljax.config",)),
  # What a run writes and reads: checkpoints, metrics, datasets.
  ("io", ("erljax.io",)),
  # The run loop both modes share: checkpoints, records, signals, cadence.
  ("loop", ("erljax.loop",)),
  # Online runs: the compiled program, feedback sessions, the policy.
  ("online", ("erljax.online",)),
  # Offline runs: rated datasets, their reward, IQL.
  ("offline", ("erljax.offline",)),
  # The experiment configs shipped with the package.
  ("configs", ("erljax.configs",)),
  # The commands: python -m erljax.<name> and the console scripts.
  (
    "commands",
    (
      "erljax.cli",
      "erljax.cli_errors",
      "erljax.cli_flags",
      "erljax.collect",
      "erljax.evaluate",
      "erljax.minari_io",
      "erljax.offline.__main__",
      "erljax.plots",
      "erljax.rate",
      "erljax.serve",
      "erljax.train",
    ),
  ),
)


def _modules() -> Dict[str, str]:
  """Dotted name -> path of every module under SRC (a package by its
  __init__.py)."""
  top = os.path.dirname(SRC)
  found = {}
  for root, _, files in os.walk(SRC):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        dotted = os.path.relpath(path, top)[: -len(".py")]
        dotted = dotted.replace(os.sep, ".")
        found[dotted.removesuffix(".__init__")] = path
  return found


MODULES = _modules()
TREES = {m: ast.parse(open(p).read(), p) for m, p in MODULES.items()}


def _owner(name: str) -> Optional[str]:
  """The module of MODULES that dotted `name` is or lies in."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name or None


def _imported(module: str) -> Iterator[str]:
  """The erljax modules `module` imports, anywhere in it (a function-level
  import is a dependency too)."""
  is_package = MODULES[module].endswith("__init__.py")
  for node in ast.walk(TREES[module]):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = module.split(".")[: None if is_package else -1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + [base] if base else parts)
      # `from pkg import mod` imports pkg.mod; `from mod import name` mod.
      names = [f"{base}.{a.name}" for a in node.names]
      names = [n if n in MODULES else base for n in names]
    else:
      continue
    for name in names:
      if name.split(".")[0] == "erljax" and _owner(name) != module:
        yield _owner(name)


def _graph(parents: bool) -> Dict[str, Set[str]]:
  """module -> the modules it imports; with `parents`, also each module's
  package (importing a.b.c runs a/b/__init__.py first)."""
  graph = {m: set(_imported(m)) for m in MODULES}
  if parents:
    for m in MODULES:
      if "." in m:
        graph[m].add(m.rpartition(".")[0])
  return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
  """The strongly connected components of more than one module (Tarjan)."""
  index: Dict[str, int] = {}
  low: Dict[str, int] = {}
  stack: List[str] = []
  found = []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while not component or component[-1] != v:
        component.append(stack.pop())
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def _layer(module: str) -> Optional[int]:
  """The index into LAYERS of `module`'s layer; None if none holds it."""
  best = None
  for i, (_, names) in enumerate(LAYERS):
    for name in names:
      below = name != "erljax" and module.startswith(name + ".")
      if module == name or below:
        if best is None or len(name) > best[0]:
          best = (len(name), i)
  return None if best is None else best[1]


def _functions() -> Iterator[Tuple[str, int]]:
  """(qualified name, lines) of every function and method."""

  def walk(node, prefix):
    for child in ast.iter_child_nodes(node):
      name = prefix
      if isinstance(
        child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
      ):
        name = f"{prefix}.{child.name}"
        if not isinstance(child, ast.ClassDef):
          yield name, child.end_lineno - child.lineno + 1
      yield from walk(child, name)

  for module, tree in TREES.items():
    yield from walk(tree, module)


def test_the_scan_sees_the_package():
  assert "erljax.raters.base" in MODULES
  # A known import: the scripted rater's Queries and Ratings.
  assert "erljax.raters.base" in _graph(parents=False)["erljax.raters.scripted"]


@pytest.mark.parametrize("parents", [False, True])
def test_no_import_cycle(parents):
  cycles = _cycles(_graph(parents))
  assert not cycles, f"modules that import each other: {cycles}"


def test_every_module_has_a_layer():
  missing = sorted(m for m in MODULES if _layer(m) is None)
  assert not missing, f"add these to a layer in LAYERS: {missing}"


def test_no_module_imports_from_a_layer_above_its_own():
  upward = []
  for module, imported in _graph(parents=False).items():
    for other in imported:
      mine, theirs = _layer(module), _layer(other)
      if mine is None or theirs is None or theirs > mine:
        upward.append(f"{module} ({mine}) imports {other} ({theirs})")
  assert not upward, "\n".join(sorted(upward))


def test_no_module_is_too_long():
  long = {}
  for module, path in MODULES.items():
    with open(path) as f:
      lines = sum(1 for _ in f)
    if lines > MAX_MODULE_LINES:
      long[module] = lines
  assert not long, f"over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_too_long():
  long = {
    name: lines
    for name, lines in _functions()
    if lines > MAX_FUNCTION_LINES and name not in LISTINGS
  }
  assert not long, f"over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_checks_catch_what_they_check():
  """The scan on a made-up graph: a loop is one cycle, an edge up a layer
  is found, a name in no layer has none."""
  loop = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert _cycles(loop) == [["a", "b", "c"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []
  assert _layer("erljax.raters.vlm") < _layer("erljax.rewards.model")
  assert _layer("erljax.offline.__main__") == len(LAYERS) - 1
  assert _layer("erljax.offline.run") == _layer("erljax.offline")
  assert _layer("erljax.trainer") is None
  assert _layer("numpy") is None
