"""Files that appear whole or not at all: written under a temporary name, renamed over the target once complete.

A rename within one folder is atomic, so a reader, a crash or a full disk meets either the old file or the new
one, never half of one. The new file's bytes are flushed to disk before the rename, and the folder's entry after
it: otherwise a power cut can leave the new name on an empty or partly written file.
"""
import contextlib
import os


@contextlib.contextmanager
def replace_together(pairs):
    """Around a block that writes each ``temporary`` of ``pairs`` (``(temporary, final)`` paths, one folder each).

    When the block succeeds each temporary is renamed over its final path, in order; whatever temporary is left
    then, because the block or a rename failed, is removed.
    """
    try:
        yield
        for temporary, _ in pairs:
            sync_file(temporary)
        for temporary, final in pairs:
            os.replace(temporary, final)
        for folder in {os.path.dirname(os.path.abspath(final)) for _, final in pairs}:
            sync_entries(folder)
    finally:
        for temporary, _ in pairs:
            if os.path.exists(temporary):
                os.remove(temporary)


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path beside ``path`` to write; it replaces ``path`` only if the block succeeds."""
    temporary = f"{path}.tmp"
    with replace_together([(temporary, path)]):
        yield temporary


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    with atomic_write(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)


def sync_file(path):
    """Flush ``path``'s bytes to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def sync_entries(folder):
    """Flush ``folder``'s entries (names, renames) to disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_folder(folder):
    """Flush a folder's files and entries to disk, so that a power cut cannot undo a finished rename."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            sync_file(path)
    sync_entries(folder)
