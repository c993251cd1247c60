"""The command line the demos share: every option checked against its range, refusals in one line.

This module and :mod:`folder` belong to the command line, not to the library:
they print and exit on behalf of the demos (``demos/*.py``), and they are the
only modules of the package that do; everything else returns numbers and arrays.

A value outside its range, an unknown choice, a wrong type, NaN or infinity, or
an option that would go unused is refused before any work starts, in one line,
``error: argument --x: invalid value 'v': allowed: ...``, with argparse's exit
code 2 and no traceback.  What happens in the output folder is :mod:`folder`'s.
"""
import argparse
import math
import re
import sys

from ..backend import BackendError, get_backend

MAX_SEED = 2 ** 63 - 1
CHECKPOINT = "checkpoint.npz"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with every error on one line: ``error: argument --x: ...``, exit code 2; and
    ``--lr -1e-3`` or ``--lr -inf`` read as a value (refused by its range), not as an option."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                                                   re.IGNORECASE)

    def error(self, message):
        self.exit(2, f"error: {message}\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows what each option allows, and its default (except for flags and options whose
    default is "not given")."""

    def _get_help_string(self, action):
        allowed = getattr(action.type, "allowed", None)
        text = action.help + (f" [{allowed}]" if allowed else "")
        if action.nargs == 0 or action.default is None:
            return text
        return text + " (default: %(default)s)"


def integer(lo, hi):
    """An argparse type: an integer in ``lo..hi``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: allowed: {parse.allowed}")
        return value
    parse.allowed = f"an integer from {lo:,} to {hi:,}"
    return parse


def integers(lo, hi, most=8):
    """An argparse type: 1 to ``most`` comma-separated integers in ``lo..hi``, as a tuple."""
    one = integer(lo, hi)

    def parse(text):
        parts = text.split(",")
        try:
            if not 1 <= len(parts) <= most:
                raise argparse.ArgumentTypeError("")
            return tuple(one(part.strip()) for part in parts)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: allowed: {parse.allowed}") from None
    parse.allowed = f"1 to {most} comma-separated integers, each from {lo:,} to {hi:,}"
    return parse


def real(lo, hi, lo_open=True, hi_open=False):
    """An argparse type: a finite number in the interval from ``lo`` to ``hi``
    (``None``: unbounded), ends open or closed as flagged."""
    left = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
    right = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
    allowed = "a finite number " + " and ".join(s for s in (left, right) if s)

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (lo is None or (value > lo if lo_open else value >= lo)) \
            and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: allowed: {allowed}")
        return value
    parse.allowed = allowed
    return parse


class _NotGiven:
    """Marks an option left out of the command line."""


def given_options(parser, argv):
    """The ``dest`` of every option the command line gives (its value may equal the default)."""
    marker = _NotGiven()
    ns = argparse.Namespace(**{a.dest: marker for a in parser._actions if a.dest != argparse.SUPPRESS})
    parser.parse_args(argv, namespace=ns)
    return {k for k, v in vars(ns).items() if v is not marker}


def refuse(parser, option, why):
    """Exit as argparse does for a bad value: one line naming ``option``, exit code 2."""
    parser.error(f"argument {option}: {why}")


def add_common_options(p, out, eval_every, eval_size, n_samples, max_samples=1_000_000,
                       auto_shards="one per core, each shard at least 1,024 examples"):
    """The options every training demo has, with this demo's defaults; ``auto_shards`` says
    what ``--shards 0`` chooses."""
    p.add_argument("--seed", type=integer(0, MAX_SEED), default=0, help="the one seed of the run")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="network and optimizer precision (the bound's tables are always float64)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                   help="array backend (default: $NUMPY_DIFFUSION_BACKEND or numpy)")
    p.add_argument("--shards", type=integer(0, 256), default=0,
                   help=f"threads a training step splits its batch over (at most the batch size); 0: "
                        f"{auto_shards} (the count is saved with the run: a seed and a shard count "
                        "reproduce it exactly)")
    p.add_argument("--out", default=out, help="output folder")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help=f"continue the run in OUT/{CHECKPOINT}, up to --steps (default: its own)")
    again.add_argument("--overwrite", action="store_true",
                       help=f"start over, replacing the run in OUT (its {CHECKPOINT} and outputs)")
    p.add_argument("--eval-every", type=integer(1, 10_000_000), default=eval_every,
                   help="held-out evaluation (and checkpoint) interval, in steps")
    p.add_argument("--eval-size", type=integer(2, 10_000_000), default=eval_size,
                   help="held-out examples, final evaluation (two at least: a standard error needs two)")
    p.add_argument("--n-samples", type=integer(1, max_samples), default=n_samples,
                   help="reverse samples to save")


def check_backend(parser, args, given):
    """The array module for ``--backend`` (or ``$NUMPY_DIFFUSION_BACKEND``), or refuse it."""
    try:
        return get_backend(args.backend)
    except BackendError as err:
        if "backend" in given:
            refuse(parser, "--backend", str(err))
        parser.error(str(err))


def check_shards(parser, args, given):
    """``--shards`` may not exceed the batch size."""
    if "shards" in given and args.shards > args.batch_size:
        refuse(parser, "--shards", f"invalid value {args.shards}: allowed: 0 (automatic) to the batch size, "
                                   f"{args.batch_size}")


def refuse_misfits(parser, args, given, checks):
    """Refuse values that do not fit together: the first of ``checks``, ``(dests, fits, allowed)``,
    whose ``fits`` is false, in one line naming the first of ``dests`` the command line gives
    (else the first of them), its value, and what is ``allowed``."""
    for dests, fits, allowed in checks:
        if not fits:
            dest = next((d for d in dests if d in given), dests[0])
            value = getattr(args, dest)
            shown = f"{value:g}" if isinstance(value, float) else value
            refuse(parser, "--" + dest.replace("_", "-"), f"invalid value {shown}: allowed: {allowed}")


def refuse_unused(parser, given, option, dest, when, reason):
    """Refuse ``option`` given where ``when`` makes it unused (no silent no-ops)."""
    if dest in given and when:
        refuse(parser, option, f"not used {reason}")


def fail(message, code=1):
    """Print ``message`` to stderr and exit with ``code``."""
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)


