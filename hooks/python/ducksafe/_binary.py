"""Which ducksafe binary a call runs."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Iterator, List, Optional

from ._errors import BinaryNotFound
from ._types import EXIT_NOT_FOUND

_NAME = "ducksafe.exe" if sys.platform == "win32" else "ducksafe"


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def _installed_candidates() -> Iterator[Path]:
    """Where an installer put the binary of the installed ``ducksafe`` distribution: first the
    file its RECORD names (exact for venvs, ``--user``, ``--prefix`` and ``--target``
    installs), then the scripts folders of this interpreter (an installer that wrote no RECORD
    entry)."""
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8 has no importlib.metadata; nothing was installed by it
        return
    try:
        dist = metadata.distribution("ducksafe")
    except metadata.PackageNotFoundError:
        return
    for f in dist.files or ():
        if f.name == _NAME and f.parent.name in ("bin", "Scripts"):
            # RECORD paths are relative to site-packages: ../../../bin/ducksafe.
            yield Path(os.path.normpath(str(dist.locate_file(f))))
    schemes: List[Optional[str]] = [None]
    if sys.version_info >= (3, 10):
        schemes.append(sysconfig.get_preferred_scheme("user"))
    else:
        schemes.append(f"{os.name}_user")
    for scheme in schemes:
        try:
            scripts = (
                sysconfig.get_path("scripts")
                if scheme is None
                else sysconfig.get_path("scripts", scheme)
            )
        except KeyError:
            continue
        if scripts:
            yield Path(scripts) / _NAME


def installed_binary() -> Optional[str]:
    """The binary installed with this package (the wheel built from the checkout, see
    docs/integrations.md), if there is one."""
    for p in _installed_candidates():
        if _executable(p):
            return str(p)
    return None


def find_binary(binary: Optional[str] = None) -> str:
    """The ducksafe binary a call runs: ``binary`` when given; else the one installed with this
    package (the environment's scripts folder); else ``$DUCKSAFE_BIN`` (``$DUCKSAFE``, the name
    ``hooks/ducksafe_hook.py`` read, is honoured too); else ``ducksafe`` on PATH.

    Raises :class:`BinaryNotFound` (exit code 127) when there is none, or when the variable
    names a file that does not exist or cannot be executed (a wrong ``$DUCKSAFE_BIN`` is said
    as such, not taken for a broken binary).
    """
    if binary:
        return binary
    found = installed_binary()
    if found is not None:
        return found
    for var in ("DUCKSAFE_BIN", "DUCKSAFE"):
        named = os.environ.get(var)
        if named:
            return _named_by(var, named)
    on_path = shutil.which(_NAME)
    if on_path is not None:
        return on_path
    raise BinaryNotFound(
        "no ducksafe binary: not installed with the `ducksafe` package (install the wheel built"
        " from the checkout: `maturin build --locked --release --out dist && pip install"
        " dist/ducksafe-*.whl`), $DUCKSAFE_BIN not set, and no `ducksafe` on PATH",
        EXIT_NOT_FOUND,
    )


def _named_by(var: str, named: str) -> str:
    """The binary an environment variable names, checked before it is run: a name without a
    slash is looked up on PATH, as a shell would."""
    if os.sep not in named and (os.altsep is None or os.altsep not in named):
        found = shutil.which(named)
        if found is None:
            raise BinaryNotFound(
                f"${var} is `{named}`, and there is no `{named}` on PATH; set ${var} to the"
                " path of the ducksafe binary, or unset it",
                EXIT_NOT_FOUND,
            )
        return found
    p = Path(named)
    if not p.exists():
        why = "does not exist"
    elif p.is_dir():
        why = "is a directory"
    elif not os.access(p, os.X_OK):
        why = "is not executable (`chmod +x` it, or name the right file)"
    else:
        return named
    raise BinaryNotFound(
        f"${var} names `{named}`, which {why}; set ${var} to the path of the ducksafe binary,"
        " or unset it",
        EXIT_NOT_FOUND,
    )
