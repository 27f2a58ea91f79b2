"""The house plan, checked: stage deps cover the code they run, imports follow the loop, the docs resolve."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.errors import ShopError
from core.params import load_params

ROOT = Path(__file__).resolve().parents[1]
LOOP = ["core", "pipelines", "features", "monitoring", "training", "serving"]  # shared base first, then loop order


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    modules = {}
    for package in LOOP:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, imported at the top of the file) for every project import in `path`."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in LOOP:
                continue
            target = name if name in modules else name.rsplit(".", 1)[0]
            if target in modules:
                found.append((target, id(node) in top))
                break
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: {t for t, _ in imports_of(path, modules)} - {name} for name, path in modules.items()}


def closure(module: str, graph: dict[str, set[str]], packages: bool = True) -> set[str]:
    """`module` and every project module it imports, transitively (with `packages`, also the packages they
    sit in: a package's __init__ runs before its modules)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or name not in graph:
            continue
        seen.add(name)
        todo += list(graph[name])
        if packages:
            parts = name.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    return seen


def expanded_stages() -> dict[str, dict]:
    """dvc.yaml stages with `foreach` expanded over params.yaml (only ${key} and ${item.<field>} are used)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    out = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        for key, item in _lookup(params, stage["foreach"].strip("${} ")).items():
            text = yaml.safe_dump(stage["do"])
            text = text.replace("${key}", key)
            text = re.sub(r"\$\{item\.(\w+)\}", lambda m, item=item: str(item[m.group(1)]), text)
            out[f"{name}@{key}"] = yaml.safe_load(text)
    for stage in out.values():  # params interpolated into commands, e.g. ${train.launcher}
        stage["cmd"] = re.sub(r"\$\{([\w.]+)\}", lambda m: str(_lookup(params, m.group(1))), stage["cmd"])
    return out


def _lookup(params: dict, dotted: str):
    for part in dotted.split("."):
        params = params[part]
    return params


def test_train_stages_run_under_the_launcher_in_params():
    stages = {name: stage["cmd"] for name, stage in expanded_stages().items() if name.startswith("train@")}
    launcher = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["launcher"]
    assert stages and all(cmd.startswith(f"{launcher} -m training.train ") for cmd in stages.values()), stages
    torchrun = load_params(ROOT / "params.yaml", {"train": {"launcher": "torchrun --nproc-per-node=4"}})
    assert torchrun.train.launcher == "torchrun --nproc-per-node=4"
    with pytest.raises(ShopError, match="train.launcher"):
        load_params(ROOT / "params.yaml", {"train": {"launcher": "bash -c 'rm -rf data'"}})


def dep_paths(stage: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])]


def test_every_stage_lists_the_code_it_runs_in_its_deps():
    graph, modules = import_graph(), project_modules()
    missing = {}
    for name, stage in expanded_stages().items():
        module = re.search(r" -m ([\w.]+)", stage["cmd"]).group(1)
        main = module if module in modules else f"{module}.__main__"
        assert main in modules, f"{name}: runs {module}, which is not a project module"
        deps = [d.rstrip("/") for d in dep_paths(stage)]
        files = {modules[m].relative_to(ROOT).as_posix() for m in closure(main, graph) if m in modules}
        uncovered = sorted(f for f in files if not any(f == d or f.startswith(d + "/") for d in deps))
        if uncovered:
            missing[name] = uncovered
    assert not missing, f"stages whose deps miss code they import: {missing}"


def test_imports_follow_the_loop_without_cycles_or_local_imports():
    modules = project_modules()
    backward, local = [], []
    for name, path in modules.items():
        for target, at_top in imports_of(path, modules):
            if LOOP.index(target.split(".")[0]) > LOOP.index(name.split(".")[0]):
                backward.append(f"{name} -> {target}")
            if not at_top:
                local.append(f"{name} -> {target}")
    assert not backward, f"imports from a later stage: {backward}"
    assert not local, f"function-local project imports: {local}"
    graph = import_graph()
    cycles = [(a, b) for a in graph for b in graph[a] if a in closure(b, graph, packages=False)]
    assert not cycles, f"import cycles: {cycles}"


def test_stages_that_never_open_the_feature_store_start_without_importing_feast():
    # Feast takes ~6 s to import on 2 cores; every train@search-* stage, evaluate, promote and package would pay it
    stages = "training.train, training.evaluate, training.promote, serving.package"
    code = f"import sys, {stages}; print('feast' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "False"


def test_dvc_dag_draws_the_loop_in_order():
    stages = expanded_stages()
    produced = {}
    for name, stage in stages.items():
        for out in stage.get("outs", []) + stage.get("metrics", []):
            produced[next(iter(out)) if isinstance(out, dict) else out] = name.split("@")[0]
    edges = set()
    for name, stage in stages.items():
        for dep in dep_paths(stage):
            for out, producer in produced.items():
                if out == dep or out.startswith(dep + "/") or dep.startswith(out + "/"):
                    edges.add((producer, name.split("@")[0]))
    loop = ["fetch", "ingest", "split", "augment", "gate", "fuse", "train", "evaluate", "promote", "package"]
    for before, after in zip(loop, loop[1:], strict=False):
        assert (before, after) in edges, f"dvc.yaml: no path {before} -> {after}"
    assert {("split", "features"), ("features", "train"), ("evaluate", "report")} <= edges


def test_readme_is_a_front_door_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "README.md is the front door: at most 200 lines (details in docs/)"
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, f"links that do not resolve inside the repository: {broken}"


@pytest.mark.parametrize(
    "stage", sorted({re.search(r" -m ([\w.]+)", s["cmd"]).group(1) for s in expanded_stages().values()})
)
def test_every_stage_command_has_help(stage):
    result = subprocess.run(
        [sys.executable, "-m", stage, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage" in result.stdout and "Traceback" not in result.stderr, result.stdout


def pinned(lock: str) -> dict[str, str]:
    """{canonical name: version} of a lock file's `name==version` lines (`-r` includes and comments skipped)."""
    pins = {}
    for line in (ROOT / lock).read_text().splitlines():
        if line and not line.startswith(("#", "-r")):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_locks_split_runtime_from_dev_tools_and_pin_every_direct_dependency():
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev, s3 = pinned("requirements.lock"), pinned("requirements-dev.lock"), pinned("requirements-s3.lock")
    for lock, extra in ((runtime, project["dependencies"]), (dev, project["optional-dependencies"]["dev"])):
        for spec in extra:
            req = Requirement(spec)
            name = re.sub(r"[-_.]+", "-", req.name).lower()
            assert name in lock, f"{req.name} is not pinned"
            assert req.specifier.contains(lock[name]), f"{req.name}=={lock[name]} breaks {spec}"
    for name in ("dvc-s3", "boto3"):
        assert name in s3
    assert not {"pytest", "ruff", "locust", "schemathesis"} & set(runtime)  # `make repro` installs no dev tools
    assert not set(runtime) & set(dev) and not set(runtime) & set(s3)  # one pin per package


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["training.promote", "--params", "x"], "--params"),
        (["training.evaluate", "--no-such-option"], "--no-such-option"),
    ],
)
def test_a_usage_error_is_one_line_without_a_traceback(args, option):
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"error: No such option: {option}")
