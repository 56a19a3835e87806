"""Content-addressed attachment files under ``state_dir/attachments``.

Files are written before the transaction commits and are never the only
copy: the raw mail stays in the database, so a file lost in a crash can be
re-derived. That is why no fsync is paid per attachment on the ingest path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


class BlobStore:
    def __init__(
        self, root: Path, *, dry_run: bool = False, recover: Callable[[str], bytes | None] | None = None
    ) -> None:
        self.root = root
        self.dry_run = dry_run  # `rules test` runs the real pipeline but must leave no files
        # Re-derives a file that is not here from the raw mail in the database: lost in a crash, or
        # received by another daemon (each keeps its own state_dir) and now sent by this one
        self._recover = recover

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, sha256: str, data: bytes) -> Path:
        target = self.path(sha256)
        if self.dry_run or target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def get(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            data = self._recover(sha256) if self._recover is not None else None
            if data is None:
                raise
        self.put(sha256, data)
        return data
