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


@pytest.mark.parametrize("module", present(THROUGH_UTILS))
def test_training_core_only_through_utils(module):
    direct = sorted(m for m in imported_modules(REPO / module) if top(m) == "training")
    assert not direct, f"{module} imports {direct}; import those names from utils"


def test_utils_reexports_by_name_what_its_users_import():
    tree = ast.parse((REPO / "utils.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(a.name == "*" for n in imports for a in n.names), "utils.py star-imports"
    imported = {a.asname or a.name for n in imports for a in n.names}
    exported = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in n.targets))
    assert len(exported) == len(set(exported)) and set(exported) == imported
    users = present(THROUGH_UTILS) + [str(p.relative_to(REPO)) for p in REPO.glob("bench/*.py")]
    for user in users:
        for node in ast.walk(ast.parse((REPO / user).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "utils":
                missing = {a.name for a in node.names} - set(exported)
                assert not missing, f"{user} imports {sorted(missing)} that utils does not export"
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "utils"):
                assert node.attr in exported, f"{user} uses utils.{node.attr}, not exported"


def test_utils_exports_the_whole_training_api():
    import training
    import utils
    assert set(utils.__all__) == set(training.__all__)


@pytest.mark.parametrize("package, forbidden", [
    ("model", {"training", "utils", "dataset", "downstream_dataset", "evaluation"}),
    ("dataset_maker", {"training", "utils", "downstream_dataset", "evaluation"}),
])
def test_lower_layers_never_import_upper_ones(package, forbidden):
    forbidden = forbidden | STAGE_MODULES
    bad = {f"{path.name} imports {m}" for path in sorted((REPO / package).glob("*.py"))
           for m in imported_modules(path) if top(m) in forbidden}
    assert not bad, f"{package}/ must not depend on what is built on it: {sorted(bad)}"
