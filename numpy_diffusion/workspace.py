"""Arrays kept from one training step to the next.

A training step at batch 4,096 makes a dozen arrays of 2 to 4 MB.  Freed, they go
back to the C allocator, which returns memory above a threshold to the operating
system; the next step then faults the same pages in again (about 4,000 page faults
per step, a fifth of its time, measured by ``demos/benchmark.py``).  A
:class:`Workspace` hands the step the same arrays every time instead.

The step asks for its large arrays in the same order each time, so the ``k``-th
request of a step is answered with the ``k``-th array, made anew only when its
shape or dtype changed.  :meth:`Workspace.start` begins a step; nothing the step
was given may be used after the next ``start``.  Layers take ``ws=None`` and ask
:func:`empty`, which without a workspace is plain ``xp.empty``: gradient checks
and one-off calls allocate as usual.
"""


class Workspace:
    """Reusable arrays of one array module ``xp``, handed out in request order."""

    def __init__(self, xp):
        self.xp, self.arrays, self.k = xp, [], 0

    def start(self):
        """Begin a step: the next request gets the first array again."""
        self.k = 0

    def empty(self, shape, dtype):
        """An uninitialized array of ``shape`` and ``dtype``, the same one as last step's."""
        if self.k == len(self.arrays):
            self.arrays.append(None)
        a = self.arrays[self.k]
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = self.arrays[self.k] = self.xp.empty(shape, dtype=dtype)
        self.k += 1
        return a

    @property
    def nbytes(self):
        """Bytes held."""
        return sum(a.nbytes for a in self.arrays if a is not None)


def empty(ws, xp, shape, dtype):
    """``ws.empty(shape, dtype)``, or a fresh ``xp.empty`` without a workspace."""
    return xp.empty(shape, dtype=dtype) if ws is None else ws.empty(shape, dtype)
