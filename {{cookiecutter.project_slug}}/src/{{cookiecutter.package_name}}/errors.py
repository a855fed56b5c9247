"""Every error a user can fix, and the exit codes the pipeline speaks: one place for both.

The CLI prints a ForgeError's message without a traceback (exit 2); every other exception is a bug. Each message
names the file, the key, the value and the fix.
"""

from __future__ import annotations

# EX_TEMPFAIL: "interrupted, checkpointed, run me again". train exits with it after a signal; launch passes it on;
# the cluster profiles requeue on it.
REQUEUE_EXIT_CODE = 75
# What the CLI returns for a ForgeError (argparse uses 2 for bad options too).
USER_ERROR_EXIT_CODE = 2


class ForgeError(Exception):
    """A problem the user can fix (bad input, missing file): the CLI prints its message without a traceback."""


class ParamsError(ForgeError, ValueError):
    """A params.yaml problem, with a message meant for the person who edits the file."""


class DataError(ForgeError, ValueError):
    """A problem with the input data (missing variable/level/time, NaN, bad layout), with the fix in the message."""


class ModelError(ForgeError, ValueError):
    """The model section of params.yaml does not fit the data (grid, name); the message says what to change."""


class CheckpointMismatchError(ForgeError, ValueError):
    """train.init_from points at a checkpoint made for other channels, another grid or another architecture."""


class EvaluationError(ForgeError, ValueError):
    """A problem with the inputs of forecast / evaluate / report: the message names the file or key and the fix."""


class DirtyCodeError(ForgeError, RuntimeError):
    """Tracked code differs from the commit and allow_dirty is false (the CLI prints it as one error line)."""


class IntegrityError(ForgeError, ValueError):
    """A file a run reads back (stats.json, a checkpoint, models/model.pt) does not match the checksum written with
    it, or cannot be parsed: the message names the file and how to get a good copy back."""


class ComparisonError(ForgeError, ValueError):
    """`compare` cannot pair two experiments (unknown revision, no per-initial-time scores, nothing in common): the
    message names both and the fix."""
