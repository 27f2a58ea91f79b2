"""Project code uses only the public APIs of Feast, Evidently, MLflow, bm25s and DVC: no private modules or names,
no private attributes, no monkeypatches of their modules."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["core", "pipelines", "features", "monitoring", "training", "serving"]
LIBRARIES = {"feast", "evidently", "mlflow", "bm25s", "dvc"}
# Underscore names that are public API: namedtuple methods and fields.
ALLOWED = {"_asdict", "_replace", "_fields", "_make", "_field_defaults"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__") and name not in ALLOWED


def _root(node: ast.expr) -> str | None:
    """The name an attribute chain starts from (`a` in `a.b.c`), or None."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def violations(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: what` for every use of a private part of LIBRARIES (and of private attributes of any object
    other than self / cls, since their owner cannot be told statically)."""
    tree = ast.parse(source, filename)
    lines = source.splitlines()
    found: list[tuple[int, str]] = []
    bound: set[str] = set()  # names bound to a library module or object by an import
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    bound.add(alias.asname or alias.name.split(".")[0])
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append((node.lineno, f"private module {alias.name}"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            if any(_private(part) for part in node.module.split(".")):
                found.append((node.lineno, f"private module {node.module}"))
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if _private(alias.name):
                    found.append((node.lineno, f"private name {node.module}.{alias.name}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, f"private attribute .{node.attr}"))
        patched: list[ast.expr] = []
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            patched = [t for t in targets if isinstance(t, ast.Attribute) and _root(t) in bound]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            patched = [arg for arg in node.args[:1] if _root(arg) in bound]
        for target in patched:
            found.append((node.lineno, f"monkeypatch of {ast.unparse(target)}"))
    return [f"{filename}:{line}: {what}: {lines[line - 1].strip()}" for line, what in sorted(set(found))]


def test_project_code_uses_only_public_library_apis():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found += violations(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "private library API used (use public API instead):\n" + "\n".join(found)


def test_the_scan_finds_private_modules_names_attributes_and_monkeypatches():
    source = "\n".join(
        [
            "import mlflow",
            "from mlflow.tracking._tracking_service.utils import is_tracking_uri_set",
            "from feast.utils import _get_unique_entities",
            "import dvc._debug",
            "from evidently.legacy.metrics.data_drift import embeddings_drift",
            "provider = self.store._get_provider()",
            "embeddings_drift.TSNE = object",
            "setattr(mlflow, 'log_metric', print)",
            "row = record._asdict()",
            "self._cache = {}",
        ]
    )
    found = violations(source, "example.py")
    assert [f.split(": ")[0] for f in found] == [f"example.py:{n}" for n in (2, 3, 4, 6, 7, 8)], found
