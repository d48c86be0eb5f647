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
    """The binary installed with this package (``pip install ducksafe``), if there is one."""
    for p in _installed_candidates():
        if _executable(p):
            return str(p)
    return None


def find_binary(binary: Optional[str] = None) -> str:
    """The ducksafe binary a call runs: ``binary`` when given; else the one installed with this
    package (the environment's scripts folder); else ``$DUCKSAFE_BIN`` (``$DUCKSAFE``, the name
    ``hooks/ducksafe_hook.py`` read, is honoured too); else ``ducksafe`` on PATH.

    Raises :class:`BinaryNotFound` (exit code 127) when there is none.
    """
    if binary:
        return binary
    found = installed_binary()
    if found is not None:
        return found
    for var in ("DUCKSAFE_BIN", "DUCKSAFE"):
        named = os.environ.get(var)
        if named:
            return named
    on_path = shutil.which(_NAME)
    if on_path is not None:
        return on_path
    raise BinaryNotFound(
        "no ducksafe binary: not installed with the `ducksafe` package (install the wheel built"
        " from the checkout: `maturin build --locked --release --out dist && pip install"
        " dist/ducksafe-*.whl`), $DUCKSAFE_BIN not set, and no `ducksafe` on PATH",
        EXIT_NOT_FOUND,
    )
