"""The import rules of the tree (issue 12, "one home per concern"), read from the source with ast:

- no stage script imports another stage script;
- bench/ imports no stage script and nothing from tests/ (it runs stage scripts as commands);
- stage scripts and the dataset modules reach `training/` only through `utils`, which re-exports
  it by name (no star import), and import from `utils` only names it exports.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGE_SCRIPTS = ("train_vq.py", "train_pretrain.py", "train_instruction.py",
                 "simple_inference.py", "demo.py")
STAGE_MODULES = {Path(s).stem for s in STAGE_SCRIPTS}
# Modules that may use the training core only through utils.
THROUGH_UTILS = (*STAGE_SCRIPTS, "dataset.py", "downstream_dataset.py", "evaluation.py",
                 "sample_store.py", "report.py")
TEST_MODULES = {"tests", "conftest"} | {p.stem for p in (REPO / "tests").glob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name a file imports, anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def present(names) -> list[str]:
    return [n for n in names if (REPO / n).is_file()]


@pytest.mark.parametrize("script", present(STAGE_SCRIPTS))
def test_stage_scripts_never_import_each_other(script):
    others = STAGE_MODULES - {Path(script).stem}
    bad = {top(m) for m in imported_modules(REPO / script)} & others
    assert not bad, f"{script} imports the stage script(s) {sorted(bad)}; move what it needs " \
                    "into model/, dataset.py, downstream_dataset.py, evaluation.py or utils.py"


@pytest.mark.parametrize("path", sorted((REPO / "bench").glob("*.py")), ids=lambda p: p.name)
def test_bench_imports_no_stage_script_and_no_test_fixture(path):
    modules = {top(m) for m in imported_modules(path)}
    assert not modules & STAGE_MODULES, f"bench/{path.name} imports {modules & STAGE_MODULES}"
    assert not modules & TEST_MODULES, f"bench/{path.name} imports {modules & TEST_MODULES}"
    assert '"tests"' not in path.read_text(), f"bench/{path.name} puts tests/ on its path"




def test_utils_reexports_by_name_what_its_users_import():
    tree = ast.parse((REPO / "utils.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(a.name == "*" for n in imports for a in n.names), "utils.py star-imports"
    imported = {a.asname or a.name for n in imports for a in n.names}
    exported = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in n.targets))
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert len(exported) == len(set(exported)) and set(exported) <= imported | defined
    users = present(THROUGH_UTILS) + [str(p.relative_to(REPO)) for p in REPO.glob("bench/*.py")]
    for user in users:
        for node in ast.walk(ast.parse((REPO / user).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "utils":
                missing = {a.name for a in node.names} - set(exported)
                assert not missing, f"{user} imports {sorted(missing)} that utils does not export"
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "utils"):
                assert node.attr in exported, f"{user} uses utils.{node.attr}, not exported"


def test_utils_exports_only_what_the_application_uses():
    """Issue 21: utils is the stages' view of training/, not a second copy of its API (tests
    import training directly)."""
    import utils
    used = set()
    for path in [*project_files(), *REPO.glob("bench/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "utils":
                used.update(a.name for a in node.names)
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "utils"):
                used.add(node.attr)
    assert not set(utils.__all__) - used, f"utils exports unused {set(utils.__all__) - used}"


@pytest.mark.parametrize("package, forbidden", [
    ("model", {"training", "utils", "dataset", "downstream_dataset", "evaluation"}),
    ("dataset_maker", {"training", "utils", "downstream_dataset", "evaluation"}),
])
def test_lower_layers_never_import_upper_ones(package, forbidden):
    forbidden = forbidden | STAGE_MODULES
    bad = {f"{path.name} imports {m}" for path in sorted((REPO / package).glob("*.py"))
           for m in imported_modules(path) if top(m) in forbidden}
    assert not bad, f"{package}/ must not depend on what is built on it: {sorted(bad)}"


# ----------------------------------------------------------------------------- the whole graph

SKIP_DIRS = {".venv", "tests", ".git", "__pycache__", "bench", "docs", "runs", "out"}


def project_files() -> list[Path]:
    """Every Python file of the application and its libraries (tests and bench excluded)."""
    return sorted(p for p in REPO.rglob("*.py")
                  if not SKIP_DIRS & set(p.relative_to(REPO).parts[:-1]))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


PROJECT = {module_name(p): p for p in project_files()}
PROJECT_TOPS = {top(m) for m in PROJECT}


def resolve(importer: str, node: ast.ImportFrom) -> str | None:
    """The absolute module an ImportFrom names (relative imports resolved)."""
    if node.level == 0:
        return node.module
    package = importer.split(".")
    if not PROJECT[importer].name == "__init__.py":
        package = package[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def project_edges(importer: str) -> set[str]:
    """The project modules `importer` imports (a `from pkg import mod` counts as pkg.mod)."""
    found = set()
    for node in ast.walk(ast.parse(PROJECT[importer].read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(importer, node)
            if base is None:
                continue
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in PROJECT:
                name = name.rpartition(".")[0]
            if name and name != importer:
                found.add(name)
    return found


def test_no_import_cycle():
    """Imports inside functions count too: a cycle hidden in a function is still a cycle."""
    graph = {m: project_edges(m) for m in PROJECT}
    # a package's __init__ importing its own submodules is how packages are made, not a cycle
    for m, edges in graph.items():
        if PROJECT[m].name == "__init__.py":
            graph[m] = {e for e in edges if not e.startswith(m + ".")}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("path", project_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_importlib_import_of_project_modules(path):
    """importlib hides a dependency from every reader and from the checks above."""
    text = path.read_text()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                arg = node.args[0] if node.args else None
                literal = arg.value if isinstance(arg, ast.Constant) else None
                dynamic = isinstance(arg, ast.JoinedStr) or literal is None
                assert not (dynamic or top(str(literal)) in PROJECT_TOPS), (
                    f"{path.relative_to(REPO)}:{node.lineno} imports a module by name; "
                    "import it by a plain import statement")


@pytest.mark.parametrize("path", project_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_reaches_another_modules_private_names(path):
    importer = module_name(path)
    aliases = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            source = resolve(importer, node)
            if source is None or top(source) not in PROJECT_TOPS:
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in PROJECT:
                    aliases[alias.asname or alias.name] = full
                elif alias.name.startswith("_") and not alias.name.startswith("__"):
                    assert source == importer, (
                        f"{importer} imports the private name {alias.name} of {source}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if top(alias.name) in PROJECT_TOPS:
                    aliases[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0])
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            raise AssertionError(f"{importer}:{node.lineno} reaches "
                                 f"{aliases[node.value.id]}.{node.attr}, a private name")


def test_training_library_imports_nothing_of_the_application():
    allowed = {"training", "model"}
    bad = sorted(f"{m} imports {n}" for m in PROJECT if top(m) == "training"
                 for n in project_edges(m) if top(n) not in allowed)
    assert not bad, f"training/ is a library: {bad}"


@pytest.mark.parametrize("path", project_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_module_size(path):
    lines = len(path.read_text().splitlines())
    limit = 350 if path.parent == REPO and path.stem in STAGE_MODULES | {"serve"} else 450
    assert lines <= limit, f"{path.relative_to(REPO)} has {lines} lines (at most {limit})"


def application_files() -> list[str]:
    """Every file of the application: all but the training library, utils and model/."""
    return [str(p.relative_to(REPO)) for p in project_files()
            if top(module_name(p)) not in {"training", "utils", "model"}]


@pytest.mark.parametrize("module", sorted(set(present(THROUGH_UTILS)) | set(application_files())))
def test_training_core_only_through_utils(module):
    direct = sorted(m for m in imported_modules(REPO / module) if top(m) == "training")
    assert not direct, f"{module} imports {direct}; import those names from utils"
