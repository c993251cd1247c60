"""Checkpoints: one ``.npz`` of arrays plus one JSON config, written atomically.

A checkpoint ``run/checkpoint.npz`` holds the arrays and, as a JSON string,
its configuration; a readable copy of the configuration sits beside it in
``run/checkpoint.json``.  Each file is written to a temporary file in the
same folder and moved into place with :func:`os.replace`, so a crash
mid-write never leaves a half-written file where a good one was; and since
the ``.npz`` carries its own configuration, a crash between the two writes
cannot separate a checkpoint from its configuration either.  Arrays are
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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)                 # mkstemp makes 0600; honour the umask instead
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
    """Save host ``arrays`` (dict of name -> ndarray) and ``config`` (JSON-able) to
    ``path``, and a readable copy of ``config`` beside it (``.json``)."""
    text = json.dumps(config, sort_keys=True)
    atomic_write(path, lambda f: numpy.savez(f, config_json=numpy.array(text), **arrays))
    save_json(config_path(path), config)


def load_checkpoint(path):
    """Load ``(arrays, config)`` written by :func:`save_checkpoint`.

    The configuration is the copy inside the ``.npz``; the ``.json`` beside it
    is for people and is not read.

    Raises
    ------
    CheckpointError
        If the file is missing, is not a valid ``.npz``, or carries no valid
        configuration.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path!r} does not exist; a checkpoint is the "
                              ".npz file a training run writes (e.g. runs/swiss_roll/checkpoint.npz)")
    try:
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not an .npz file ({err})") from err
    try:
        config = json.loads(str(arrays.pop("config_json")))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path!r} carries no valid configuration ({err!r}); "
                              "it was not written by numpy_diffusion") from err
    return arrays, config
