"""The import graph between our packages (issue 15, "Layering"):

- the REST bridge imports none of the service's code (`service`, `native`): of our packages only
  itself and `api_common`, besides the generated `llama.v1` and third-party packages, so it
  can be installed and run where the service is not;
- `api_common` imports neither `service`, `native` nor `rest_bridge`;
- the scheduler (`service/engine/scheduler.py`) is plain Python: nothing it imports, through
  any chain of our own modules, is `native`, `grpc` or `asyncio`.

Each rule is checked statically (every import statement of the files, function-level ones
included, and `importlib.import_module("...")` with a literal name), and where it can be at
run time too, in a fresh interpreter's `sys.modules`.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).absolute().parent.parent
OUR_PACKAGES = frozenset({"api_common", "bench", "native", "rest_bridge", "service"})
BRIDGE_MAY_IMPORT = frozenset({"api_common", "rest_bridge"})  # of OUR_PACKAGES
SCHEDULER = "service.engine.scheduler"
SCHEDULER_MUST_NOT_IMPORT = frozenset({"native", "grpc", "asyncio"})


# -- static: the import statements of a file ---------------------------------------------------
def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every module the file `path` (module `name`) may import, as absolute dotted names;
    `from a import b` gives `a` and `a.b` (b may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.add(node.args[0].value)
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id in {"__import__", "import_module"}) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module")


def top(name: str) -> str:
    return name.partition(".")[0]


def python_files(package_dir: Path) -> list[Path]:
    files = sorted(package_dir.rglob("*.py"))
    assert files, f"no Python files under {package_dir}"
    return files


# -- static: what a module imports through our own modules -------------------------------------
def source_of(name: str, root: Path) -> Path | None:
    """The file of our module `name` under `root`, or None (not a module: an attribute)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def with_parents(name: str) -> Iterator[str]:
    """`a.b.c` -> `a`, `a.b`, `a.b.c`: importing a module runs its packages' __init__ first."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def import_chains(start: str, root: Path, ours: Iterable[str]) -> dict[str, list[str]]:
    """Every module `start` imports directly or through our own modules (those whose top-level
    package is in `ours`, followed statically), each with a shortest chain of imports to it."""
    ours = frozenset(ours)
    chains: dict[str, list[str]] = {}
    todo = deque((parent, [parent]) for parent in with_parents(start))
    while todo:
        name, chain = todo.popleft()
        if name in chains:
            continue
        chains[name] = chain
        path = source_of(name, root) if top(name) in ours else None
        if path is None:
            continue
        for imported in sorted(imports_of(path, name)):
            for parent in with_parents(imported):
                if parent not in chains:
                    todo.append((parent, [*chain, parent]))
    return chains


def forbidden_chains(start: str, root: Path, forbidden: Iterable[str],
                     ours: Iterable[str] = OUR_PACKAGES) -> list[str]:
    """`a -> b -> c` for each forbidden top-level package `start` reaches; empty when none."""
    forbidden = frozenset(forbidden)
    return sorted(" -> ".join(chain) for name, chain in import_chains(start, root, ours).items()
                  if top(name) in forbidden and "." not in name)


# -- run time: sys.modules of a fresh interpreter ----------------------------------------------
def loaded_after_importing(modules: Iterable[str]) -> set[str]:
    """The modules a fresh interpreter has loaded after importing `modules`."""
    code = "".join(f"import {m}\n" for m in modules) + \
        "import json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = dict(os.environ)
    paths = [str(REPO), str(REPO / "gen" / "python"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return set(loaded)


def bridge_modules() -> list[str]:
    return [module_name(p, REPO) for p in python_files(REPO / "rest_bridge")]


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# -- the REST bridge ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", python_files(REPO / "rest_bridge"),
                         ids=lambda p: p.name)
def test_bridge_imports_no_service_code(path: Path) -> None:
    ours = {top(m) for m in imports_of(path, module_name(path, REPO))} & OUR_PACKAGES
    assert ours <= BRIDGE_MAY_IMPORT, f"{path.name} imports {sorted(ours - BRIDGE_MAY_IMPORT)}"


@pytest.mark.parametrize(("source", "found"), [
    ("import service.errors\n", "service"),
    ("import json, native as n\n", "native"),
    ("from service import auth\n", "service"),
    ("from native.sampler import NO_TOKEN\n", "native"),
    ("def later():\n    from service.config import ServerNetConfig\n", "service"),
    ("if False:\n    import native\n", "native"),
    ("import importlib\nimportlib.import_module('service.cli')\n", "service"),
    ("from . import service\n", "rest_bridge"),
])
def test_the_bridge_check_sees_every_form(tmp_path: Path, source: str, found: str) -> None:
    path = _tree(tmp_path, {"rest_bridge/probe.py": source}) / "rest_bridge" / "probe.py"
    assert found in {top(m) for m in imports_of(path, "rest_bridge.probe")}


def test_importing_the_whole_bridge_loads_no_service_code() -> None:
    loaded = loaded_after_importing(bridge_modules())
    assert "rest_bridge.app" in loaded and "rest_bridge.cli" in loaded
    assert sorted(m for m in loaded if top(m) in {"service", "native", "bench"}) == []


# -- api_common --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", python_files(REPO / "api_common"), ids=lambda p: p.name)
def test_api_common_imports_neither_side(path: Path) -> None:
    ours = {top(m) for m in imports_of(path, module_name(path, REPO))} & OUR_PACKAGES
    assert ours <= {"api_common"}, f"{path.name} imports {sorted(ours - {'api_common'})}"


def test_importing_api_common_loads_neither_side() -> None:
    modules = [module_name(p, REPO) for p in python_files(REPO / "api_common")]
    loaded = loaded_after_importing(modules)
    assert sorted(m for m in loaded if top(m) in OUR_PACKAGES - {"api_common"}) == []


def test_service_still_exports_what_moved() -> None:
    import api_common.auth
    import api_common.errors
    import service.auth
    import service.errors

    assert service.errors.ERROR_KINDS is api_common.errors.ERROR_KINDS
    assert service.errors.ErrorKind is api_common.errors.ErrorKind
    assert service.errors.GRPC_TO_HTTP is api_common.errors.GRPC_TO_HTTP
    assert service.auth.key_matches is api_common.auth.key_matches
    assert service.errors.ServiceError("not_found", "x").info.http_status == 404


def test_pyproject_lists_api_common() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "api_common*" in config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "api_common" in config["tool"]["mypy"]["packages"]


# -- the scheduler -----------------------------------------------------------------------------
def test_scheduler_imports_no_native_grpc_or_asyncio() -> None:
    assert source_of(SCHEDULER, REPO) is not None, f"{SCHEDULER} is missing"
    assert forbidden_chains(SCHEDULER, REPO, SCHEDULER_MUST_NOT_IMPORT) == []


def test_importing_the_scheduler_loads_no_native_grpc_or_asyncio() -> None:
    loaded = loaded_after_importing([SCHEDULER])
    assert sorted(m for m in loaded if top(m) in SCHEDULER_MUST_NOT_IMPORT) == []


@pytest.mark.parametrize(("files", "chain"), [
    ({"service/engine/helper.py": "import native\n"},
     "service.engine.scheduler -> service.engine.helper -> native"),
    ({"service/engine/helper.py": "from native.sampler import x\n"},
     "service.engine.scheduler -> service.engine.helper -> native"),
    ({"service/engine/helper.py": "def f():\n    from grpc import aio\n"},
     "service.engine.scheduler -> service.engine.helper -> grpc"),
    ({"service/engine/helper.py": "from . import deeper\n",
      "service/engine/deeper.py": "import asyncio.queues\n"},
     "service.engine.scheduler -> service.engine.helper -> service.engine.deeper -> asyncio"),
    ({"service/engine/helper.py": "from ..util import go\n",
      "service/util.py": "import importlib\nimportlib.import_module('native')\n"},
     "service.engine.scheduler -> service.engine.helper -> service.util -> native"),
    ({"service/engine/__init__.py": "import grpc\n", "service/engine/helper.py": ""},
     "service.engine -> grpc"),
])
def test_the_scheduler_check_follows_our_imports(tmp_path: Path, files: dict[str, str],
                                                 chain: str) -> None:
    """The check itself, on a scheduler of our own that reaches a forbidden package only
    through another of our modules."""
    root = _tree(tmp_path, {"service/__init__.py": "", "service/engine/__init__.py": "",
                            "service/engine/scheduler.py":
                                "import bisect\nfrom service.engine.helper import thing\n",
                            **files})
    assert forbidden_chains(SCHEDULER, root, SCHEDULER_MUST_NOT_IMPORT) == [chain]


def test_the_scheduler_check_passes_a_clean_scheduler(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "service/__init__.py": "", "service/engine/__init__.py": "",
        "service/engine/scheduler.py": "import threading\nfrom service.engine import slots\n",
        "service/engine/slots.py": "from dataclasses import dataclass\n",
        # Not imported by the scheduler: its imports do not count.
        "service/engine/engine.py": "import native, grpc, asyncio\n"})
    assert forbidden_chains(SCHEDULER, root, SCHEDULER_MUST_NOT_IMPORT) == []


# -- the service's use of the bridge's pure modules (issue 24) ---------------------------------
# llama.v1.LlamaServerHttp (service/rpc_http.py) parses and renders with the bridge's code, so
# Envoy's REST answers are the bridge's bytes; it may use only these modules, which import no
# web framework at run time.
SERVICE_MAY_IMPORT_FROM_BRIDGE = frozenset({
    "rest_bridge", "rest_bridge.errors", "rest_bridge.jsonio", "rest_bridge.protoparse",
    "rest_bridge.shapes", "rest_bridge.render_native", "rest_bridge.render_openai",
    "rest_bridge.render_embedding", "rest_bridge.render_server", "rest_bridge.sse_frames",
    "rest_bridge.input_checks", "rest_bridge.media_json"})
WEB_FRAMEWORKS = frozenset({"fastapi", "starlette", "uvicorn"})
# service/cli.py also starts the bridge as a child process and sets up grpc as it needs.
CLI_MAY_IMPORT_FROM_BRIDGE = frozenset({"rest_bridge.launcher", "rest_bridge.grpc_polling"})


def _bridge_modules_named(imported: set[str]) -> set[str]:
    """The bridge modules among `imported` (`from rest_bridge.x import name` gives
    rest_bridge.x and rest_bridge.x.name; the latter is a name, not a module)."""
    return {m for m in imported if top(m) == "rest_bridge" and (
        source_of(m, REPO) is not None or m == "rest_bridge")}


@pytest.mark.parametrize("path", python_files(REPO / "service"), ids=lambda p: p.name)
def test_service_imports_only_the_pure_bridge_modules(path: Path) -> None:
    name = module_name(path, REPO)
    may = SERVICE_MAY_IMPORT_FROM_BRIDGE | (
        CLI_MAY_IMPORT_FROM_BRIDGE if name == "service.cli" else frozenset())
    used = _bridge_modules_named(imports_of(path, name))
    assert used <= may, f"{path.name} imports {sorted(used - may)}"


def test_the_pure_bridge_modules_import_only_each_other() -> None:
    for name in sorted(SERVICE_MAY_IMPORT_FROM_BRIDGE):
        path = source_of(name, REPO)
        assert path is not None, name
        used = _bridge_modules_named(imports_of(path, name))
        assert used <= SERVICE_MAY_IMPORT_FROM_BRIDGE, \
            f"{name} imports {sorted(used - SERVICE_MAY_IMPORT_FROM_BRIDGE)}"


def test_the_service_loads_no_web_framework() -> None:
    loaded = loaded_after_importing(["service.server", "service.rpc_http"])
    assert "rest_bridge.render_openai" in loaded
    assert sorted(m for m in loaded if top(m) in WEB_FRAMEWORKS) == []
