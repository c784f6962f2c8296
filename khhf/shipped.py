"""Files the project ships outside its Python code: the Asterisk
configuration (asterisk/).

In a checkout they sit at the top of the repository. A wheel carries copies
in khhf/_shipped/, put there at build time by setup.py, so an installed
`khhf` finds them without the repository.
"""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
PACKAGED = Path(__file__).resolve().parent / "_shipped"


def shipped(name: str) -> Path:
    """The path of top-level file or directory `name` (e.g. "asterisk")."""
    # setup.cfg marks a checkout: an installed package's parent directory is
    # site-packages, where another distribution's "asterisk" could live
    if (CHECKOUT / "setup.cfg").exists() and (CHECKOUT / name).exists():
        return CHECKOUT / name
    if (PACKAGED / name).exists():
        return PACKAGED / name
    return CHECKOUT / name  # missing everywhere: errors name the checkout's path
