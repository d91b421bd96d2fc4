"""Where `gate-agent hub token --out FILE` puts a token: checked, then written (mode 0600, owned
as asked, fsynced) before the token is stored at the hub, so a file that cannot be had never
leaves a stored token nobody has. A new file is created in place (O_EXCL: no link, which a FAT
USB stick cannot make); ``--force`` writes a temporary file beside it and renames it over the old
one once the token is stored (a crash leaves the old file or the new).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.errors import UsageError


@dataclass(frozen=True)
class TokenFile:
    """Where `hub token --out` puts a token: checked by :func:`checked`, written by
    :func:`stage` before the token is stored and put in place by :func:`place` after."""

    path: Path
    force: bool = False
    uid: int = -1  # -1: unchanged (the caller's)
    gid: int = -1
    owner: str = ""


def checked(path: Path, *, force: bool = False, owner: str | None = None) -> TokenFile:
    """Check that ``path`` may receive a token; ``owner`` is ``USER[:GROUP]`` (root only).

    Raises UsageError when the file exists (a dangling link too) and ``force`` is false, its
    folder is missing or not writable, the name cannot be a file's, or the owner is unknown or
    cannot be set by this process.
    """
    try:
        if path.is_dir():
            raise UsageError(f"--out {path}: a folder; give a file name")
        if os.path.lexists(path) and not force:
            link = " (a symbolic link)" if path.is_symlink() else ""
            raise UsageError(
                f"--out {path}: already exists{link}; --force replaces it (a token in it stays"
                " valid until `hub token --revoke-gate` or `--revoke-console`)"
            )
        if not path.parent.is_dir():
            raise UsageError(f"--out {path}: no folder {path.parent}")
        if not os.access(path.parent, os.W_OK):
            raise UsageError(f"--out {path}: cannot write in {path.parent}")
        os.stat(path.parent / path.name, follow_symlinks=False)  # the name itself, too long?
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UsageError(f"--out {path}: {exc.strerror or exc}") from None
    if owner is None:
        return TokenFile(path, force)
    uid, gid = _owner_ids(owner)
    if os.geteuid() != 0 and (uid != os.geteuid() or gid not in (-1, *os.getgroups())):
        raise UsageError(f"--owner {owner}: only root can give a file to another user")
    return TokenFile(path, force, uid, gid, owner)


def _owner_ids(owner: str) -> tuple[int, int]:
    import grp
    import pwd

    user, _, group = owner.partition(":")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"--owner {owner}: no user {user!r} on this machine") from None
    if not group:
        return entry.pw_uid, entry.pw_gid
    try:
        return entry.pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(f"--owner {owner}: no group {group!r} on this machine") from None


def stage(where: TokenFile, token: str) -> Path:
    """Write ``token`` and a newline, mode 0600, owned as asked, fsynced: to ``where.path``
    itself (created, never replaced) or, with ``force``, to a temporary file beside it. Returns
    the file written. Raises UsageError when it cannot be written (nothing is left behind then).
    """
    path = where.path
    try:
        if where.force:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged = Path(name)
        else:
            fd, staged = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), path
    except FileExistsError:
        raise UsageError(f"--out {path}: already exists; --force replaces it") from None
    except OSError as exc:
        raise UsageError(f"--out {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        if where.uid != -1 or where.gid != -1:
            os.fchown(fd, where.uid, where.gid)
        os.write(fd, (token + "\n").encode("ascii"))
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        discard(staged)
        raise UsageError(f"--out {path}: {exc.strerror or exc}") from None
    os.close(fd)
    return staged


def place(where: TokenFile, staged: Path) -> None:
    """Put the ``staged`` file in place once its token is stored (a rename with ``force``).

    Raises OSError when the rename fails (the staged file is removed then).
    """
    if staged != where.path:
        try:
            os.replace(staged, where.path)
        except OSError:
            discard(staged)
            raise
    # The folder's entry, made durable where the file system can (a FAT stick cannot: the file
    # is there all the same, so nothing to report).
    with contextlib.suppress(OSError):
        dir_fd = os.open(where.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def discard(staged: Path) -> None:
    """Remove a staged file whose token was not stored."""
    with contextlib.suppress(OSError):
        staged.unlink(missing_ok=True)
