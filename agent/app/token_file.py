"""Where `gate-agent hub token --out FILE` puts a token: checked, then written aside (mode 0600,
owned as asked, fsynced) before the token is stored at the hub, then linked into place; so a
file that cannot be had never leaves a stored token nobody has, and a crash leaves the file
complete or absent.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from agent.errors import UsageError


@dataclass(frozen=True)
class TokenFile:
    """Where `hub token --out` puts a token: checked by :func:`checked` and written aside by
    :func:`stage` before the token is stored, so a file that cannot be had never
    leaves a stored token nobody has."""

    path: Path
    force: bool = False
    uid: int = -1  # -1: unchanged (the caller's)
    gid: int = -1
    owner: str = ""

    @property
    def staged(self) -> Path:
        """The file the token is written to before it is stored (then linked into place)."""
        return self.path.with_name(f".{self.path.name}.tmp")


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


def stage(where: TokenFile, token: str) -> None:
    """Write ``token`` and a newline to ``where.staged``: mode 0600, owned as asked, fsynced.

    Raises UsageError when it cannot be written (nothing is left behind then).
    """
    tmp = where.staged
    try:
        tmp.unlink(missing_ok=True)  # a temp file a crash left behind, possibly with another owner
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            if where.uid != -1 or where.gid != -1:
                os.fchown(fd, where.uid, where.gid)
            os.write(fd, (token + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UsageError(f"--out {where.path}: {exc.strerror or exc}") from None


def place(where: TokenFile) -> None:
    """Put the staged file in place: complete or absent after a crash; never replaces a file
    that appeared meanwhile unless ``force``. The staged file is gone on return.

    Raises UsageError when the name was taken meanwhile, OSError when linking fails.
    """
    path, tmp = where.path, where.staged
    try:
        if where.force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the name was taken since checked() looked
    except FileExistsError:
        raise UsageError(f"--out {path}: already exists; --force replaces it") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
