"""Checkpoints: one ``.npz`` of arrays plus one JSON config, written atomically.

A checkpoint ``run/checkpoint.npz`` has its configuration beside it in
``run/checkpoint.json``.  Both are written to a temporary file in the same
folder and moved into place with :func:`os.replace`, so a crash mid-write
never leaves a half-written checkpoint where a good one was.  Arrays are
loaded with ``allow_pickle=False``: a checkpoint cannot run code.
"""
import json
import os
import tempfile
import zipfile

import numpy


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def config_path(path):
    """The JSON file that goes with checkpoint ``path`` (``x.npz`` -> ``x.json``)."""
    root, _ = os.path.splitext(os.fspath(path))
    return root + ".json"


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file, then move it onto ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def save_checkpoint(path, arrays, config):
    """Save host ``arrays`` (dict of name -> ndarray) to ``path`` and ``config`` beside it.

    The arrays go first, then the config; a reader checks that the two carry
    the same ``step``, so a crash between the two writes is detected.
    """
    atomic_write(path, lambda f: numpy.savez(f, **arrays))
    save_json(config_path(path), config)


def load_checkpoint(path):
    """Load ``(arrays, config)`` written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If either file is missing, is not a valid ``.npz`` / JSON file, or
        the two do not belong together.
    """
    path = os.fspath(path)
    cfg_path = config_path(path)
    for p in (path, cfg_path):
        if not os.path.isfile(p):
            raise CheckpointError(f"checkpoint file {p!r} does not exist; a checkpoint is a "
                                  ".npz file with a .json config beside it")
    try:
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not an .npz file ({err})") from err
    try:
        with open(cfg_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint config {cfg_path!r} is not valid JSON ({err})") from err
    if "step" in arrays and config.get("step") != int(arrays["step"]):
        raise CheckpointError(f"{path!r} (step {int(arrays['step'])}) and {cfg_path!r} "
                              f"(step {config.get('step')}) do not belong together")
    return arrays, config
