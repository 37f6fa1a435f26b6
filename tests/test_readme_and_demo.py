"""The README's commands and the demo's stages call scripts and flags that exist.

The demo runs every stage for real (bash demo.sh); these tests keep its command lines and the
README's in step with the scripts' argument parsers, without running the stages.
"""
from __future__ import annotations

import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

import demo

REPO = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=None)
def help_text(*script: str) -> str:
    """--help of a script, or of a module: help_text("-m", "model.random_lm")."""
    result = subprocess.run([sys.executable, *script, "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"{script} --help failed:\n{result.stderr}"
    return result.stdout


def flags_of(argv: list[str]) -> list[str]:
    return [a.split("=")[0] for a in argv if a.startswith("--")]


def readme_commands() -> list[tuple[str, list[str]]]:
    return [(script, flags_of(argv)) for script, argv in readme_argvs()]


def readme_argvs() -> list[tuple[str, list[str]]]:
    """(script, flags) of every `python X.py ...` command in the README's code blocks and inline
    code; a command continued with a trailing backslash is joined first."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"(?<!`)`(python [^`]+)`", text)       # e.g. the prepare-script table
    lines = "\n".join(blocks + inline).replace("\\\n", " ").splitlines()
    commands = []
    for line in lines:
        line = line.split("#")[0]
        words = line.split()
        scripts = [w for w in words if w.endswith(".py")]
        if not scripts or scripts[0] == "demo.py" and "--help" in words:
            continue
        script = scripts[0]
        tail = words[words.index(script) + 1:]
        commands.append((script, [w.strip("[]") for w in tail if w.strip("[]")]))
    return commands


# Parses a list of (script, argv) with each script's own parser and stops there: argparse
# exits 2 on an unknown flag, a wrong number of values or a bad choice.
PARSE_ONLY = """
import argparse, json, runpy, sys
original = argparse.ArgumentParser.parse_args
def parse_only(self, args=None, namespace=None):
    original(self, args, namespace)
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = parse_only
failed = []
for script, argv in json.loads(sys.stdin.read()):
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as done:
        if done.code not in (0, None):
            failed.append([script, argv])
print(json.dumps(failed))
"""


def test_readme_commands_parse_with_the_right_number_of_values():
    """Each documented command line goes through its script's parser: flag names, the number of
    values each flag takes (nargs) and choices."""
    import json

    commands = [(script, argv) for script, argv in readme_argvs()
                if not script.startswith("/") and "..." not in script and "..." not in argv]
    result = subprocess.run([sys.executable, "-c", PARSE_ONLY], cwd=REPO, capture_output=True,
                            text=True, timeout=300, input=json.dumps(commands))
    assert result.returncode == 0, result.stderr[-3000:]
    failed = json.loads(result.stdout.strip().splitlines()[-1])
    assert failed == [], f"README commands the scripts reject: {failed}\n{result.stderr[-3000:]}"


def test_readme_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == \
        ["bash demo.sh", "bash test.sh"]
    assert "bash test.sh" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("script,flags", readme_commands(), ids=lambda v: str(v)[:40])
def test_readme_command_uses_existing_flags(script, flags):
    if script.startswith("/") or "..." in script:
        pytest.skip("placeholder path")
    assert (REPO / script).is_file(), f"README names {script}, which does not exist"
    usage = help_text(script)
    for flag in flags:
        assert flag in usage, f"README passes {flag} to {script}, which does not accept it"


def test_demo_stages_call_existing_scripts_with_accepted_flags(tmp_path):
    stages = demo.demo_stages(tmp_path, scale=1.0, seed=0, settings=demo.DEFAULT_SETTINGS)
    assert [s.name for s in stages][0] == "synthetic raw EEG"
    assert len(stages) == 1 + len(demo.DATASETS) + 1 + 3 + 1
    for stage in stages:
        script = stage.argv[1]
        assert (REPO / script).is_file(), f"demo stage '{stage.name}' runs missing {script}"
        usage = help_text(script)
        for flag in flags_of(stage.argv[2:]):
            assert flag in usage, f"demo passes {flag} to {script}, which does not accept it"


def test_llama_demo_shares_the_data_and_runs_its_own_lm_stages(tmp_path):
    default = demo.demo_stages(tmp_path, scale=1.0, seed=0, settings=demo.DEFAULT_SETTINGS)
    llama = demo.demo_stages(tmp_path, scale=1.0, seed=0, settings=demo.DEFAULT_SETTINGS,
                             backbone="llama")
    shared = [s for s in llama if s in default]
    assert [s.name for s in shared] == [s.name for s in default[:len(demo.DATASETS) + 3]]
    own = llama[len(shared):]
    assert not {s.name for s in own} & {s.name for s in default}    # markers of their own
    assert not {p for s in own for p in s.outputs} & {p for s in default for p in s.outputs}
    folder = tmp_path / "llama"
    pretrain = next(s for s in own if s.argv[1] == "train_pretrain.py")
    assert pretrain.argv[pretrain.argv.index("--init_from") + 1] == str(folder)
    for stage in own:
        script = tuple(stage.argv[1:3]) if stage.argv[1] == "-m" else (stage.argv[1],)
        assert script[0] == "-m" or (REPO / script[0]).is_file(), script
        usage = help_text(*script)
        for flag in flags_of(stage.argv[1 + len(script):]):
            assert flag in usage, f"demo passes {flag} to {script}, which does not accept it"


def test_demo_reuses_finished_stages(tmp_path, capsys):
    stage = demo.Stage("echo", [sys.executable, "-c", "print('ran')"])
    assert demo.run_stage(stage, tmp_path) > 0
    assert demo.run_stage(stage, tmp_path) == 0.0
    assert "reusing" in capsys.readouterr().out


def test_demo_reports_the_checkpoint_chosen_on_validation():
    results = {"best": {"iter_num": 20},
               "evaluations": [{"iter_num": 10, "results": {}}, {"iter_num": 20, "results": {}},
                               {"iter_num": 30, "results": {}}]}
    assert demo.best_evaluation(results)["iter_num"] == 20
    results["best"] = None
    assert demo.best_evaluation(results)["iter_num"] == 30
