"""Dependencies point one way: flows -> tasks -> (model, data), serve -> model. model/ and data/ are plain libraries."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("model", "data")


def modules(package: str) -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_model_and_data_never_import_the_pipeline_or_its_services():
    for package in LIBRARIES:
        for name, path in modules(package).items():
            bad = {i for i in imports(path) if i.split(".")[0] in ("tasks", "flows", "prefect", "mlflow")}
            assert not bad, f"{name} imports {sorted(bad)}"
            text = path.read_text()
            assert '"tasks.' not in text and "'tasks." not in text, f"{name} names a tasks module in a string"


def test_no_import_cycle_among_the_library_modules():
    graph = {}
    everything = {n: p for package in LIBRARIES for n, p in modules(package).items()}
    for name, path in everything.items():
        graph[name] = {i for i in imports(path) if i in everything and i != name}
    done, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)


def test_the_server_depends_on_the_model_package_only():
    """serve/ runs on a model folder and a store: the registry and the pipeline reach it through flows/serving.py."""
    for name, path in modules("serve").items():
        bad = {i for i in imports(path) if i.split(".")[0] in ("tasks", "flows", "prefect", "mlflow", "data")}
        assert not bad, f"{name} imports {sorted(bad)}"
