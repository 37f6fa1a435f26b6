"""What the TUH corpora (TUAB, TUEV, TUSL, TUEG) share: the 23-channel referential montage and
the official train/eval folders."""

# The public code's channel order for TUAB/TUEV/TUSL (dataset.LEGACY_TUH_CHANNELS), so files
# written here and the legacy files agree row for row.
from dataset import LEGACY_TUH_CHANNELS
from dataset_maker import common

TUH_CHANNELS = tuple(LEGACY_TUH_CHANNELS)
VAL_FRACTION = 0.2  # of the official train subjects (spec section 1)


def official_split(recordings, train_folder: str = "train", eval_folder: str = "eval"):
    """Official eval -> test; 20 % of the train subjects (fixed seed) -> val, the rest train.

    A subject found in both official folders goes wholly to test, so no subject spans splits."""
    test_subjects = {r.subject for r in recordings if r.extra["folder"] == eval_folder}
    train_subjects = ({r.subject for r in recordings if r.extra["folder"] == train_folder}
                      - test_subjects)
    split_of = common.split_shuffled(train_subjects, VAL_FRACTION)
    split_of.update({s: "test" for s in test_subjects})
    for rec in recordings:
        rec.split = split_of[rec.subject]


def folder_under(raw_dir, path, allowed):
    """The first folder below raw_dir ('train' or 'eval'), or None when it is neither."""
    top = path.relative_to(raw_dir).parts[0]
    return top if top in allowed else None
