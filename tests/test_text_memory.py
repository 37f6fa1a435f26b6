"""text_dataset_maker/prepare.py keeps its memory bounded: a corpus four times larger than the
memory it may allocate is tokenised (run in a child process under RLIMIT_DATA)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CORPUS_MB, HEADROOM_MB = 24, 6

CHILD = """
import json, pathlib, resource, sys
sys.path.insert(0, sys.argv[1])
from text_dataset_maker import prepare

def vm_data():
    for line in open("/proc/self/status"):
        if line.startswith("VmData"):
            return int(line.split()[1]) * 1024

corpus, out, headroom = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), int(sys.argv[4])
# a first small run loads the tokenizer, the lazy imports and the worker threads: fixed costs
warm = out.parent / "warm.jsonl"
warm.write_text("".join(json.dumps({"text": f"warm-up document {i}"}) + "\\n" for i in range(20)))
prepare.prepare_corpus(out.parent / "warm", inputs=[str(warm)], num_proc=1)
limit = vm_data() + headroom
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
try:
    corpus.read_text()
    print("the limit does not bind")
except MemoryError:
    pass
meta = prepare.prepare_corpus(out, inputs=[str(corpus)], num_proc=1)
print(json.dumps(meta["tokens"]))
"""


def write_corpus(path: Path, megabytes: int) -> int:
    words = np.array("the of and to in is that for it as was with be by on not he this are or "
                     "his from at which but have an they you were her she there been one".split())
    rng = np.random.default_rng(0)
    documents = 0
    with open(path, "w") as f:
        while f.tell() < megabytes * 2**20:
            f.write(json.dumps({"text": " ".join(words[rng.integers(0, len(words), 800)])}) + "\n")
            documents += 1
    return documents


def test_a_corpus_larger_than_the_memory_limit_is_tokenised(tmp_path):
    documents = write_corpus(tmp_path / "big.jsonl", CORPUS_MB)
    done = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(tmp_path / "big.jsonl"),
                           str(tmp_path / "out"), str(HEADROOM_MB * 2**20)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "the limit does not bind" not in lines
    tokens = json.loads(lines[-1])
    for split in ("train", "val"):
        ids = np.fromfile(tmp_path / "out" / f"{split}.bin", dtype=np.uint16)
        assert len(ids) == tokens[split]
    # 800 words a document, each one GPT-2 token, plus the end token
    assert tokens["train"] + tokens["val"] == documents * 801
