"""Look at EEG with the model's answers: a local web page and its HTTP API (issue 24).

    python serve.py --model_path runs/instruction/best.pt --tokenizer_path runs/vq/last.pt \
        --data_dir recordings/ [--port 8000] [--out_dir out/viewer]
    python serve.py          # after `python demo.py`: the demo's model and synthetic recordings

Open the address it prints. The page lists the recordings in --data_dir (and uploads), runs the
whole-recording analysis of `inference/` on one with a task, and pages through the same
preprocessed signal the model read with its answers under the traces. The API behind it is
documented at /docs. It listens on 127.0.0.1 unless --host says otherwise; results are kept in
--out_dir/results, so reopening an analysis is instant, uploads in --out_dir/uploads.
"""
from __future__ import annotations

import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)

# isort: split

import argparse
import ipaddress
import math
import sys
from pathlib import Path

from utils import USER_ERROR_EXIT, UserError

REPO = Path(__file__).resolve().parent
DEMO = REPO / "out" / "demo"     # demo.py's default --out_dir
DEMO_MODEL = DEMO / "checkpoints" / "instruction" / "best.pt"
DEMO_TOKENIZER = DEMO / "checkpoints" / "vq" / "last.pt"
DEMO_RECORDINGS = DEMO / "raw"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def shown(path: Path) -> str:
    """A path as the user would type it from the repository root."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model_path", type=Path, default=None,
                   help=f"instruction-tuned NeuroLM checkpoint or exported folder (default: "
                        f"the demo's, {shown(DEMO_MODEL)}, when it exists)")
    p.add_argument("--tokenizer_path", type=Path, default=None,
                   help="VQ checkpoint whose encoder the LM uses (optional when the LM checkpoint "
                        "carries it)")
    p.add_argument("--base_folder", type=Path, default=None,
                   help="where a LoRA checkpoint's base model folder is now, if it moved")
    p.add_argument("--data_dir", type=Path, default=None,
                   help="folder of recordings to offer (default with the demo's model: its "
                        f"synthetic recordings, {shown(DEMO_RECORDINGS)})")
    p.add_argument("--out_dir", type=Path, default=REPO / "out" / "viewer",
                   help="where uploads and kept results go (default: out/viewer)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--max_upload_mb", type=float, default=512.0,
                   help="largest upload accepted, MiB (default: %(default)s)")
    p.add_argument("--max_queued", type=int, default=8,
                   help="analyses waiting beyond the running one before new ones get 503 "
                        "(default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    return p


def resolve_inputs(args: argparse.Namespace) -> argparse.Namespace:
    """Checks every flag; fills the demo's model and recordings in when none are given."""
    if args.model_path is None:
        if not DEMO_MODEL.is_file():
            raise UserError("--model_path is not given and the demo has no model yet: run "
                            "`python demo.py` first (it trains one in a few minutes on CPU), or "
                            "pass --model_path runs/instruction/best.pt --tokenizer_path "
                            "runs/vq/last.pt")
        args.model_path = DEMO_MODEL
        if args.tokenizer_path is None and DEMO_TOKENIZER.is_file():
            args.tokenizer_path = DEMO_TOKENIZER
        print(f"model: the demo's, {shown(DEMO_MODEL)}")
        if args.data_dir is None and DEMO_RECORDINGS.is_dir():
            args.data_dir = DEMO_RECORDINGS
            print(f"recordings: the demo's synthetic ones, {shown(DEMO_RECORDINGS)}")
    if args.data_dir is None:
        raise UserError("--data_dir: give the folder of recordings to offer")
    from model.export import is_exported
    for flag, path in (("--model_path", args.model_path), ("--tokenizer_path",
                                                           args.tokenizer_path)):
        if path is not None and not (path.is_file() or is_exported(path)):
            raise UserError(f"{flag} {path}: no such file (or exported model folder)")
    if not args.data_dir.is_dir():
        raise UserError(f"--data_dir {args.data_dir}: no such folder")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be in 0..65535")
    if not (math.isfinite(args.max_upload_mb) and 0 < args.max_upload_mb <= 1e6):
        raise UserError(f"--max_upload_mb {args.max_upload_mb}: must be a number in (0, 1e6]")
    if not 1 <= args.max_queued <= 10_000:
        raise UserError(f"--max_queued {args.max_queued}: must be in 1..10000")
    return args


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args = resolve_inputs(args)
        import uvicorn

        from viewer import ViewerConfig, create_app
        from viewer.analysis import Engine
        print(f"loading {args.model_path} ...", flush=True)
        engine = Engine(args.model_path, args.tokenizer_path, device=args.device,
                        base_folder=args.base_folder)
        hosts = LOOPBACK_NAMES if is_loopback(args.host) else None
        app = create_app(ViewerConfig(args.data_dir, args.out_dir, args.max_upload_mb,
                                      args.max_queued, hosts), engine)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}, not on this machine only: anyone who can "
              f"reach it can list and read the recordings in {args.data_dir}, upload files and "
              "run analyses (there is no login); use --host 127.0.0.1 unless you mean it",
              file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"NeuroLM viewer: http://{shown}:{args.port}/  (API docs: /docs; Ctrl-C stops it)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
