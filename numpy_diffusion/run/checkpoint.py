"""Checkpoints: one ``.npz`` of arrays plus one JSON config, written atomically.

A checkpoint ``run/checkpoint.npz`` holds the arrays and, as a JSON string,
its configuration; a readable copy of the configuration sits beside it in
``run/checkpoint.json``.  Each file is written to a temporary file in the
same folder and moved into place with :func:`os.replace`, so a crash
mid-write never leaves a half-written file where a good one was; and since
the ``.npz`` carries its own configuration, a crash between the two writes
cannot separate a checkpoint from its configuration either.  Arrays are
loaded with ``allow_pickle=False``: a checkpoint cannot run code.

A writer killed mid-write leaves its temporary file behind.  Temporary files
are named ``.tmp-numpy_diffusion-<pid>-<random>-<name>`` and locked (``flock``)
by their writer while it writes; the lock dies with the writer, so
:func:`remove_stale_temporaries` removes exactly the files of dead writers,
and never a file another process is writing or a file not of this pattern.
"""
import json
import os
import re
import tempfile
import zipfile

import numpy

try:
    import fcntl
except ImportError:                               # no flock (Windows): temporaries are kept
    fcntl = None

TMP_PREFIX = ".tmp-numpy_diffusion-"
_TMP_REST = re.compile(r"^[0-9]+-[a-z0-9_]{8}-.+$")               # after TMP_PREFIX: pid-random-name


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def config_path(path):
    """The JSON file that goes with checkpoint ``path`` (``x.npz`` -> ``x.json``)."""
    root, _ = os.path.splitext(os.fspath(path))
    return root + ".json"


def _locked_temporary(folder, name):
    """A new temporary file for ``name`` in ``folder``, locked by this process: ``(fd, path)``."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix="-" + name)
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:                 # not removed as stale before we held the lock
            return fd, tmp
        os.close(fd)


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file, then move it onto ``path``.

    The temporary file (see the module docstring) is removed on any exception;
    after a kill, :func:`remove_stale_temporaries` removes it.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _locked_temporary(folder, os.path.basename(path))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)                 # mkstemp makes 0600; honour the umask instead
    try:
        with os.fdopen(fd, "wb") as f:            # closing it releases the lock
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)                         # the rename itself survives a power cut


def _fsync_folder(folder):
    """Flush a folder's entries to disk (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_if_unlocked(path):
    """Remove ``path`` if no process holds its lock; whether it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:                               # gone already, or a link
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:                               # its writer is alive
        os.close(fd)
        return False
    try:
        os.remove(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


def remove_stale_temporaries(folder):
    """Remove the temporary files that killed writers left in ``folder``.

    Only regular files named by :func:`atomic_write`'s pattern whose writer no
    longer holds their lock are removed.  Returns the names removed, sorted; a
    missing folder has none (and so does every folder where ``flock`` is missing).
    """
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    if fcntl is None:
        return []
    return [n for n in names if n.startswith(TMP_PREFIX) and _TMP_REST.match(n[len(TMP_PREFIX):])
            and os.path.isfile(os.path.join(folder, n)) and _remove_if_unlocked(os.path.join(folder, n))]


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


def model_class_of(config):
    """The model class a checkpoint's configuration was written for, by name.

    Checkpoints record it as ``model_class``; older ones are told apart by
    their model configuration (the binomial model's says ``kind: binomial``).
    """
    if "model_class" in config:
        return str(config["model_class"])
    model = config.get("model", {})
    return "BinomialDiffusion" if model.get("kind") == "binomial" else "GaussianDiffusion"


def check_model_class(config, expected, path):
    """Raise :class:`CheckpointError` unless checkpoint ``path`` holds an ``expected`` model."""
    found = model_class_of(config)
    if found != expected:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} holds a {found} model, not the "
                              f"{expected} model needed here")
