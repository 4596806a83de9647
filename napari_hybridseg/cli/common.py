"""What every command shares: one-line errors on stderr and their exit status."""

from __future__ import annotations

import argparse
import os
import sys

EXIT_ERROR = 2


def err(message: str) -> int:
    """Print one line (only rank 0 does, when several processes train) and return the status."""
    if os.environ.get("RANK", "0") == "0":
        print(f"napari-hybridseg: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def say(message: str) -> None:
    print(message, file=sys.stderr)


def add_max_voxels(parser) -> None:
    from ..limits import DEFAULT_MAX_VOXELS, ENV

    parser.add_argument(
        "--max-voxels",
        type=int,
        default=None,
        help=f"largest image read, in values (default: ${ENV} or {DEFAULT_MAX_VOXELS:,}); a larger one is refused "
        "before it is read",
    )


def apply_max_voxels(args) -> None:
    from ..limits import set_max_voxels

    if getattr(args, "max_voxels", None) is not None:
        set_max_voxels(args.max_voxels)


class Given(argparse.Action):
    """Stores an option's value and notes that it was given (``args.given``): a preset
    leaves such options as the user set them."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}
