"""The project files a merge's result depends on, found from the imports in the source.

A method's result depends on the engine's import closure within the project's `merges` and
`mergeeval` packages (reading, tensor policy, writing, provenance; other methods excluded) and on the method module's own closure
(e.g. `dare` → `ties`, `tsv` → `linalg`). The DAG takes these files as inputs of the merge job,
so editing any of them reruns exactly the merges that use it, and `merge.json` records their sha256.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = "merges.engine"
PACKAGES = ("merges", "mergeeval")
METHODS = "merges.methods"


def module_file(name: str) -> Path | None:
    p = ROOT.joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


@cache
def imports_of(name: str) -> frozenset[str]:
    """Modules of the project's PACKAGES that module `name` imports (anywhere in its source)."""
    path = module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found |= {base, *(f"{base}.{a.name}" for a in node.names)}
    return frozenset(m for m in found if m.split(".")[0] in PACKAGES and module_file(m))


def closure(start: str, skip=lambda m: False) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m in seen or skip(m):
            continue
        seen.add(m)
        todo += imports_of(m)
    return seen


def code_files(method_module: str) -> list[Path]:
    """Sorted source files (absolute) whose content the merge by this method depends on."""
    engine = closure(ENGINE, skip=lambda m: m == METHODS or m.startswith(METHODS + "."))
    method = closure(method_module, skip=lambda m: m == METHODS)
    return sorted(module_file(m) for m in engine | method)


def code_record(method_module: str) -> dict:
    """{"sha256": digest of all files, "files": {path relative to the project: sha256}}."""
    files = {
        str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in code_files(method_module)
    }
    total = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in files.items()).encode()).hexdigest()
    return {"sha256": total, "files": files}
