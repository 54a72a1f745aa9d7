"""Fails when the packages of switchboard.server import each other in a cycle.

The import-linter contracts in pyproject.toml state the intended layers; this proves the
package-level graph (module-level imports, TYPE_CHECKING blocks excluded) has no cycle at all,
including between packages a contract leaves unordered. Run by `make lint`.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import grimp

ROOT = "switchboard.server"


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if module.startswith(ROOT + ".") else None


def main() -> int:
    graph = grimp.build_graph(ROOT, exclude_type_checking_imports=True)
    edges: dict[str, set[str]] = defaultdict(set)
    for module in graph.modules:
        source = package_of(module)
        for imported in graph.find_modules_directly_imported_by(module):
            target = package_of(imported)
            if source and target and source != target:
                edges[source].add(target)
    cycles = [(a, b) for a in sorted(edges) for b in sorted(edges[a]) if a in _reachable(edges, b)]
    packages = sorted(set(edges) | {b for targets in edges.values() for b in targets})
    if cycles:
        for a, b in cycles:
            chain = graph.find_shortest_chain(
                importer=f"{ROOT}.{a}", imported=f"{ROOT}.{b}", as_packages=True
            )
            print(f"cycle: {a} -> {b} (e.g. {' -> '.join(chain or [])})", file=sys.stderr)
        return 1
    print(f"package-cycles: {len(packages)} packages, no cycle")
    return 0


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


if __name__ == "__main__":
    sys.exit(main())
