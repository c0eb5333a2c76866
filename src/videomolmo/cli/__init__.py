"""The `videomolmo` command line.

Each command lives in its own module under `videomolmo.cli` and registers itself on `app`;
importing them here is what makes them appear. Heavy imports (torch, transformers, the model)
stay inside the command functions so that `videomolmo --help` is quick (tested: importing this
package does not import torch).
"""

from __future__ import annotations

import sys

from videomolmo.cli.app import app, console_error
from videomolmo.errors import VideoMolmoError

# Command modules, in the order `videomolmo --help` lists them: run, evaluate, make data, train,
# serve, inspect. One import each registers the commands it defines.
from videomolmo.cli import demo as _demo  # noqa: F401,E402
from videomolmo.cli import track as _track  # noqa: F401,E402
from videomolmo.cli import segment as _segment  # noqa: F401,E402
from videomolmo.cli import evaluate as _evaluate  # noqa: F401,E402
from videomolmo.cli import eval_masks as _eval_masks  # noqa: F401,E402
from videomolmo.cli import annotate as _annotate  # noqa: F401,E402
from videomolmo.cli import synth as _synth  # noqa: F401,E402
from videomolmo.cli import train as _train  # noqa: F401,E402
from videomolmo.cli import serve as _serve  # noqa: F401,E402
from videomolmo.cli import probe as _probe  # noqa: F401,E402
from videomolmo.cli import model_info as _model_info  # noqa: F401,E402
from videomolmo.cli import info as _info  # noqa: F401,E402


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: bad input is one line on stderr and exit code 2."""
    try:
        app(args=argv, standalone_mode=True)
    except VideoMolmoError as exc:
        console_error(str(exc))
        sys.exit(2)
