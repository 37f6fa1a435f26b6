"""The recordings the viewer may serve: those under --data_dir and its own upload folder, nothing
else.

A recording is named by its id, the POSIX path relative to its folder ("sub-01/rec.edf"), with
uploads under the "uploads/" prefix. An id is only ever looked up among the files a listing
finds (a walk that follows no symlink and keeps no file whose real path leaves its folder), so
a crafted id can name nothing outside; ids that try (`..`, absolute, encoded, backslashes) are
refused outright. Uploads are streamed to disk with a size cap and kept only when MNE reads
their header; MNE's readers of these formats parse bytes and never unpickle.
"""
from __future__ import annotations

import os
import re
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

UPLOAD_PREFIX = "uploads"
# Formats mne.io.read_raw knows, by suffix; multi-file formats (BrainVision, EEGLAB with .fdt)
# are listed from --data_dir but cannot be uploaded as one file.
LISTED_SUFFIXES = (".edf", ".bdf", ".gdf", ".fif", ".cnt", ".vhdr", ".set")
UPLOAD_SUFFIXES = (".edf", ".bdf", ".gdf", ".fif", ".cnt")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class FileProblem(Exception):
    """A request about a file that cannot be served; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RecordingInfo:
    id: str
    name: str
    source: str              # "data" or "upload"
    size_bytes: int
    duration_s: float | None
    n_channels: int | None
    sfreq: float | None
    error: str | None = None  # why its header could not be read

    def to_dict(self) -> dict:
        return asdict(self)


def read_header(path: Path) -> tuple[float, int, float]:
    """(duration s, channels, rate Hz) from the header only (no samples read)."""
    import mne
    raw = mne.io.read_raw(path, preload=False, verbose="ERROR")
    return raw.n_times / raw.info["sfreq"], len(raw.ch_names), float(raw.info["sfreq"])


def read_annotations(path: Path) -> list[dict]:
    """The file's own annotations (onset, duration, description), from its header."""
    import mne
    try:
        raw = mne.io.read_raw(path, preload=False, verbose="ERROR")
    except Exception:  # a file whose header does not read has no annotations to show
        return []
    first = raw.first_time if raw.annotations.orig_time is not None else 0.0
    return [{"onset_s": float(a["onset"]) - first, "duration_s": float(a["duration"]),
             "description": str(a["description"])} for a in raw.annotations]


def check_id(recording_id: str) -> PurePosixPath:
    """The id as a relative path, or FileProblem(400) when it tries to leave its folder."""
    text = str(recording_id)
    decoded = text
    for _ in range(3):   # %2e%2e%2f, %252e... : refuse what decodes to a traversal, too
        decoded = unquote(decoded)
    for form in (text, decoded):
        if not form or "\x00" in form or "\\" in form or form.startswith(("/", "~")) \
                or re.match(r"^[A-Za-z]:", form):
            raise FileProblem(400, f"recording {text!r}: not a relative name inside the data "
                                   "folder")
        parts = PurePosixPath(form).parts
        if any(p in ("..", ".") for p in form.split("/")) or not parts:
            raise FileProblem(400, f"recording {text!r}: '..' and '.' are not allowed in a "
                                   "recording name")
    return PurePosixPath(text)


class RecordingFolder:
    """--data_dir plus the upload folder: listing, lookup and upload."""

    def __init__(self, data_dir: Path, upload_dir: Path, max_upload_bytes: int):
        self.data_dir = Path(data_dir).resolve()
        self.upload_dir = Path(upload_dir)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self.upload_dir = self.upload_dir.resolve()
        self.max_upload_bytes = int(max_upload_bytes)
        self._headers: dict[tuple, tuple] = {}
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ listing and lookup

    def _walk(self, root: Path, prefix: str, skip: Path | None):
        """(id, real path) of every listed file under root; symlinks are never followed out."""
        for folder, dirs, files in os.walk(root, followlinks=False):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and (skip is None or (here / d).resolve() != skip))
            for name in sorted(files):
                if name.startswith(".") or not name.lower().endswith(LISTED_SUFFIXES):
                    continue
                real = (here / name).resolve()
                if not real.is_file() or not real.is_relative_to(root):
                    continue   # a symlink out of the folder (or a dangling one)
                rel = (here / name).relative_to(root).as_posix()
                yield (f"{prefix}/{rel}" if prefix else rel), real

    def paths(self) -> dict[str, Path]:
        found = dict(self._walk(self.upload_dir, UPLOAD_PREFIX, None))
        for rid, real in self._walk(self.data_dir, "", self.upload_dir):
            if rid.split("/")[0] != UPLOAD_PREFIX:   # the upload prefix is reserved
                found[rid] = real
        return found

    def resolve(self, recording_id: str) -> Path:
        """The real path of a listed recording; 400 for an id that tries to leave, 404 else."""
        check_id(recording_id)
        path = self.paths().get(str(recording_id))
        if path is None:
            raise FileProblem(404, f"recording {recording_id!r}: no such recording in the data "
                                   "folder or the uploads")
        return path

    def info(self, recording_id: str, path: Path | None = None) -> RecordingInfo:
        path = path or self.resolve(recording_id)
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self.lock:
            header = self._headers.get(key)
        if header is None:
            try:
                header = (*read_header(path), None)
            except Exception as err:  # any reader failure is shown as this file's error
                header = (None, None, None, f"{type(err).__name__}: {err}".splitlines()[0])
            with self.lock:
                if len(self._headers) > 10_000:   # files come and go: keep the cache bounded
                    self._headers.clear()
                self._headers[key] = header
        source = "upload" if recording_id.startswith(UPLOAD_PREFIX + "/") else "data"
        return RecordingInfo(recording_id, path.name, source, stat.st_size, *header)

    def listing(self) -> list[RecordingInfo]:
        return [self.info(rid, path) for rid, path in sorted(self.paths().items())]

    # ------------------------------------------------------------------ upload

    def upload_name(self, filename: str) -> str:
        """A safe, new file name in the upload folder for a user's file name (400 when its
        format cannot be uploaded)."""
        base = PurePosixPath(str(filename).replace("\\", "/")).name
        stem, suffix = os.path.splitext(base)
        if suffix.lower() not in UPLOAD_SUFFIXES:
            raise FileProblem(400, f"upload {filename!r}: only {', '.join(UPLOAD_SUFFIXES)} "
                                   "files can be uploaded (one file per recording)")
        stem = _SAFE_NAME.sub("_", stem).strip("._") or "recording"
        name = f"{stem[:80]}{suffix.lower()}"
        n = 1
        while (self.upload_dir / name).exists():
            n += 1
            name = f"{stem[:80]}-{n}{suffix.lower()}"
        return name

    def start_upload(self, filename: str, declared_size: int | None = None) -> "Upload":
        """An upload to feed chunk by chunk; 400 for a format that cannot be uploaded, 413 when
        the declared size is already beyond the cap."""
        if declared_size is not None and declared_size > self.max_upload_bytes:
            raise FileProblem(413, self.too_large_message(filename))
        return Upload(self, filename, self.upload_name(filename))

    def too_large_message(self, filename: str) -> str:
        return (f"upload {filename!r}: larger than the limit of "
                f"{self.max_upload_bytes / 2**20:g} MiB (serve.py --max_upload_mb)")


class Upload:
    """One upload streamed to a hidden temp file: write() counts bytes against the cap (413),
    finish() keeps the file only when MNE reads it as EEG (422 otherwise), abort() removes it."""

    def __init__(self, folder: RecordingFolder, filename: str, name: str):
        self.folder, self.filename, self.name = folder, filename, name
        self.tmp = folder.upload_dir / f".part-{uuid.uuid4().hex}{Path(name).suffix}"
        self.size = 0
        self._file = open(self.tmp, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.folder.max_upload_bytes:
            self.abort()
            raise FileProblem(413, self.folder.too_large_message(self.filename))
        self._file.write(chunk)

    def finish(self) -> RecordingInfo:
        try:
            self._file.close()
            if self.size == 0:
                raise FileProblem(400, f"upload {self.filename!r}: the file is empty")
            try:
                read_header(self.tmp)
            except Exception as err:  # whatever the reader says, the file is not usable EEG
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise FileProblem(422, f"upload {self.filename!r}: not a readable EEG file "
                                       f"({reason})") from None
            folder = self.folder
            with folder.lock:   # the name may have been taken while this upload streamed
                final = folder.upload_dir / self.name
                if final.exists():
                    final = folder.upload_dir / folder.upload_name(self.filename)
                os.replace(self.tmp, final)
            return folder.info(f"{UPLOAD_PREFIX}/{final.name}", final)
        finally:
            self.abort()

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)
