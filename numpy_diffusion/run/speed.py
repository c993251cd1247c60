"""Speed, kept outside the formulas: the process's allocator, and one step split over threads.

Nothing here changes a number the models compute; it changes how the process
runs them.  The models are written as plain NumPy (``out = x @ W + b``) and
allocate fresh arrays every step; two things make that fast.

**Memory kept for the next step.**  A training step at batch 4,096 makes a
dozen arrays of 2 to 4 MB.  glibc's ``malloc`` serves arrays above its mmap
threshold (128 kB at start, adapting upward to at most 32 MB) from fresh
pages and gives pages back to the operating system above its trim threshold;
the next step then faults the same pages in again (about 4,000 page faults
per step, a third of its time).  :func:`raise_malloc_thresholds` raises both
thresholds once, as ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
would, so freed arrays stay in the process for the next step.  Elsewhere than
glibc it does nothing.

**Data parallelism on the CPU.**

NumPy runs its element-wise loops on one core; only its matrix products, through
BLAS, use more.  On a machine with several cores a training step therefore
splits its batch into ``shards`` contiguous slices and runs the model's forward
and backward passes on each slice in a thread of its own.  NumPy releases the
GIL inside its loops and BLAS calls, so the shards run at the same time.  The
loss and the gradients are the shard-size-weighted means of the shards' own,
equal to the whole batch's up to float rounding (each sum over examples is split
in ``shards`` parts).  The split depends only on ``shards``, so a seed and a
shard count reproduce a run exactly, on any number of cores.

While shards run, BLAS is held to one thread, so that two shards' matrix products
do not each wake a pool of BLAS threads on cores already busy with the other
shard; it is restored afterwards.  (OpenBLAS built with pthreads, as in NumPy's
wheels, has one process-wide thread count, so the hold reaches any other thread
that calls BLAS during a sharded step.)  That control reaches OpenBLAS, the BLAS of
NumPy's own wheels; with another BLAS (:func:`blas_control` is ``None``) the
automatic shard count is 1 and nothing changes.
"""
import contextlib
import ctypes
import ctypes.util
import glob
import os

import numpy

_SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads_64_", "openblas_set_num_threads64_")
_GETTERS = ("openblas_get_num_threads", "scipy_openblas_get_num_threads64_",
            "scipy_openblas_get_num_threads_64_", "openblas_get_num_threads64_")
_control = []                                  # cached (get, set) or None, after the first look


def usable_cores():
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                     # macOS, Windows
        return os.cpu_count() or 1


def _openblas_paths():
    """Shared libraries of OpenBLAS that this process has loaded (NumPy's first)."""
    here = os.path.dirname(numpy.__file__)
    paths = glob.glob(os.path.join(here, "..", "numpy.libs", "*openblas*"))      # Linux, Windows
    paths += glob.glob(os.path.join(here, ".dylibs", "*openblas*"))              # macOS
    with contextlib.suppress(OSError):
        with open("/proc/self/maps") as maps:                                    # any other Linux build
            paths += sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    return paths


def _find(lib, names):
    return next((getattr(lib, n) for n in names if hasattr(lib, n)), None)


def blas_control():
    """``(get_threads, set_threads)`` of the OpenBLAS NumPy uses, or ``None`` if not found."""
    if not _control:
        found = None
        for path in _openblas_paths():
            with contextlib.suppress(OSError):
                lib = ctypes.CDLL(path)
                get, set_ = _find(lib, _GETTERS), _find(lib, _SETTERS)
                if get is not None and set_ is not None:
                    set_.argtypes, set_.restype = [ctypes.c_int], None
                    found = (get, set_)
                    break
        _control.append(found)
    return _control[0]


@contextlib.contextmanager
def blas_threads(n):
    """Hold BLAS to ``n`` threads inside the block (no effect where it cannot be controlled)."""
    control = blas_control()
    if control is None:
        yield
        return
    get, set_ = control
    before = get()
    set_(n)
    try:
        yield
    finally:
        set_(before)


def auto_shards(batch_size, min_rows=1024, most=8):
    """The shard count a training step uses by default: one per usable core, at most
    ``most``, each of at least ``min_rows`` examples; 1 where BLAS threads cannot be held.

    Below about 1,024 rows a shard's fixed cost (Python, and the GIL it holds) outweighs
    what a second core gains: on 2 cores, batch 512 ran 2.6-3.3 ms per step in one shard
    and 3.4-4.5 ms in two; batch 4,096 16-17 ms in two and 18-21 ms in one (the default
    swiss-roll model, ``demos/benchmark.py``)."""
    if blas_control() is None:
        return 1
    return max(1, min(usable_cores(), most, batch_size // min_rows))


def shard_slices(N, shards):
    """``shards`` contiguous slices covering ``range(N)``, sizes differing by at most one."""
    edges = [N * k // shards for k in range(shards + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # mallopt parameters, glibc's <malloc.h>


def raise_malloc_thresholds(trim=1 << 30, mmap=1 << 25):
    """Keep freed memory in the process: glibc's trim threshold to ``trim`` bytes and its
    mmap threshold to ``mmap`` bytes (32 MB, glibc's largest).  Returns whether it took
    effect; with another C library it does nothing and returns ``False``."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):         # no C library found, or not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, trim)) and bool(mallopt(M_MMAP_THRESHOLD, mmap))
