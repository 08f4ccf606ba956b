"""Whether output may be decorated: colour and styles only on a terminal and never with NO_COLOR
set (https://no-color.org); progress animation only on a terminal, and not with NO_COLOR either,
so that logs, pipes and CI jobs get plain lines. Standard library only: the CLI imports it
before anything heavy."""

from __future__ import annotations

import os
import sys


def no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def color_system() -> str | None:
    """For rich.Console: "auto" (rich drops styles off a terminal itself), None for plain."""
    return None if no_color() else "auto"


def animations() -> bool:
    """Progress bars redraw themselves in place: only on a terminal that did not ask for plain."""
    return sys.stderr.isatty() and not no_color()
