# SPDX-License-Identifier: LGPL-2.1-or-later
"""Copies of the files a client run as another user needs, where that user can reach them.

The source and build trees may sit in a directory other users cannot traverse (CI clones into
/root or a 0700 mktemp directory), so a client run as nobody can neither exec a built binary
nor open a script or the test guest there. The tests copy what it needs into a private
temporary directory opened up for reading (0755, files 0644 or 0755) and run it from there;
nothing outside that directory is ever chmod'ed. Used by tests/system and tests/tools.
"""
import os
import shutil
import tempfile


class ReachableDir:
    """A new temporary directory that any user may traverse; a context manager that removes
    it (and the copies) on exit."""

    def __init__(self, prefix="microvmd-reachable-"):
        self.path = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.path, 0o755)

    def copy(self, src, executable=False):
        """Copies @src in under its own name; returns the copy's path."""
        dst = os.path.join(self.path, os.path.basename(src))
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o755 if executable else 0o644)
        return dst

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
