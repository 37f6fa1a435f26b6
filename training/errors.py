"""User mistakes: what a trainer reports in one line (exit 2) instead of a traceback."""
from __future__ import annotations

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake in the command line or its inputs (a missing folder, a checkpoint of another
    stage, too few samples for the batch): `train_main` prints it as one line and exits 2."""


def one_line(error: BaseException) -> str:
    """The message of `error` on one line; an error re-raised from a DataLoader worker carries
    the worker's traceback, whose last line is the original message."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        kind, sep, message = last.partition(": ")
        text = message if sep and " " not in kind else last
    return " ".join(text.split())
