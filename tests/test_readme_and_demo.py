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
def help_text(script: str) -> str:
    result = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"{script} --help failed:\n{result.stderr}"
    return result.stdout


def flags_of(argv: list[str]) -> list[str]:
    return [a.split("=")[0] for a in argv if a.startswith("--")]


def readme_commands() -> list[tuple[str, list[str]]]:
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
        commands.append((script, flags_of(w.strip("[]") for w in tail)))
    return commands


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
