"""Imported first by every command: outside the environment `scripts/setup_env.sh` builds, a
command stops with one line that says how to set up, instead of a ModuleNotFoundError traceback
from deep inside an import."""
import importlib.util
import sys

# the import names of requirements.txt that every command needs
NEEDED = ("torch", "numpy", "scipy", "mne", "sklearn", "matplotlib", "tqdm", "safetensors",
          "pandas")
SET_UP = "run `bash scripts/setup_env.sh`, then `source .venv/bin/activate` (README, first lines)"

missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"error: {sys.executable} lacks {', '.join(missing)}: {SET_UP}")
