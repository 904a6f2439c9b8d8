"""Making a file's name, not only its bytes, survive a crash.

A file written, fsync'd and renamed into place still vanishes with a crash until its directory is fsync'd too:
the rename lives in the directory. The payload store, the signing keys and the file adapter all need this.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename or a new file in it) to disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
