"""Where probelab keeps its cache, and how it writes outputs (atomically, and never over your files).

Output folders (``--out``) are written by :func:`atomic_dir`: into a temp folder beside the target
(``.NAME.tmp-PID-XXXX``), renamed into place when complete, under a lock so that concurrent writers
of one path take turns. Every output folder holds a manifest, :data:`MANIFEST`
(``.probelab-output.json``: kind, command, probelab version, time, the files written). The rules:

- a target that does not exist, or is an empty folder, is written;
- a folder whose manifest has the same kind (an earlier run of the same command) is replaced;
  so is a folder from an older probelab without a manifest whose files are all ones this output
  writes (e.g. ``captures.json`` + ``states.safetensors``);
- any other non-empty folder is refused (:class:`OutputExists`) unless ``overwrite=True``
  (``--overwrite``); then it is replaced as a whole;
- never, even with ``overwrite``: a file or a symbolic link (never replaced by a folder), the
  file-system root, the home folder, the current folder or any of its parents, the probelab
  cache folder itself.

Leftovers of killed processes (``.NAME.tmp-PID-*``, ``.NAME.old-PID-*``, scratch folders under
``$PROBELAB_CACHE/tmp``) are removed by the next run once their process is gone (the pid in the
name is checked, and a pid reused by a later process does not count).
"""
from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ProbelabError

MANIFEST = ".probelab-output.json"
MANIFEST_FORMAT = "probelab.output"
LEGACY_AGE_S = 6 * 3600  # leftovers without a pid in their name are removed after this long

# Files an output of each kind holds: a folder without a manifest (written by a probelab before
# manifests) that holds only such files is recognised as an earlier output of that kind.
KIND_FILES: dict[str, tuple[str, ...]] = {
    "captures": ("captures.json", "states.safetensors", "states-*.safetensors"),
    "alignment": ("metrics.json", "report.html", "*.csv"),
    "compare": ("compare.csv", "compare.html"),
    "model": ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
              "tokenizer*", "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt",
              "added_tokens.json"),
    "sae": ("cfg.json", "*.safetensors", "probelab.json", "runner_cfg.json", "*.json"),
}


class OutputError(ProbelabError):
    """An output path that probelab will not write (one line saying why and what to do)."""


class OutputExists(OutputError):
    """The output folder exists and holds files this command did not write."""


def cache_dir() -> Path:
    """The user cache: ``$PROBELAB_CACHE`` or ``~/.cache/probelab`` (created on demand).

    The first call in a process also removes scratch folders of dead processes (``tmp/``)."""
    root = Path(os.environ.get("PROBELAB_CACHE") or Path.home() / ".cache" / "probelab")
    root.mkdir(parents=True, exist_ok=True)
    _clean_cache_once(str(root))
    return root


def network_allowed(explicit: bool | None = None) -> bool:
    """Hub downloads happen only when asked: ``allow_network=True`` or ``PROBELAB_ALLOW_NETWORK=1``."""
    if explicit is not None:
        return explicit
    return os.environ.get("PROBELAB_ALLOW_NETWORK", "").lower() in {"1", "true", "yes"}


# ---- permissions ---------------------------------------------------------------------------------
def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _usual_mode(path: Path, directory: bool) -> None:
    """Give a temp file / folder the permissions a plain ``open`` / ``mkdir`` would have: ``mkstemp``
    and ``mkdtemp`` create them private (0600 / 0700), which would carry over to the output."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _usual_modes_below(folder: Path) -> None:
    """The usual permissions for everything a writer put in ``folder`` (some libraries, e.g.
    safetensors, create files 0600); execute bits a file had are kept."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            p = os.path.join(root, f)
            if os.path.islink(p):
                continue
            mode = os.stat(p).st_mode & 0o777
            os.chmod(p, (0o666 | (0o111 if mode & 0o100 else 0)) & ~mask)


# ---- leftovers of dead processes -----------------------------------------------------------------
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-(?P<pid>\d+)(?:-.*)?$")
_LEGACY_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-[^-]+$")


@functools.lru_cache(maxsize=1)
def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime"):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), where /proc tells."""
    boot = _boot_time()
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") if boot is not None else None
    except (OSError, ValueError, IndexError):
        return None


def pid_owns(pid: int, created: float) -> bool:
    """Whether process ``pid`` is alive and could have made something at time ``created`` (a
    process that started later reuses the pid of the dead owner)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    start = _process_start(pid)
    # /proc start times are boot time + ticks; boot time is whole seconds and drifts with the wall
    # clock, so only a process that started well after the entry counts as a reuse of the pid
    return start is None or start <= created + 120.0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_leftovers(parent: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove temp/old folders and files of dead processes in ``parent`` (those of output ``name``
    only, or all); an ``.old-`` folder whose target is missing (killed between the two renames of a
    replace) is renamed back. Returns what was removed or restored."""
    parent = Path(parent)
    done = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return done
    now = time.time()
    for e in entries:
        m = _LEFTOVER.match(e.name)
        legacy = None if m else _LEGACY_LEFTOVER.match(e.name)
        hit = m or legacy
        if not hit or (name is not None and hit["name"] != name):
            continue
        try:
            mtime = e.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if m:
            if pid_owns(int(m["pid"]), mtime):
                continue
        elif now - mtime < LEGACY_AGE_S:
            continue
        path = Path(e.path)
        target = parent / hit["name"]
        if hit["what"] == "old" and not os.path.lexists(target):
            with contextlib.suppress(OSError):
                os.replace(path, target)
                done.append(path)
                continue
        _remove(path)
        done.append(path)
    return done


SCRATCH = re.compile(r"-(?P<pid>\d+)-[^-]+$")


def clean_scratch(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove scratch folders of dead processes under ``$PROBELAB_CACHE/tmp`` (see :func:`scratch_dir`),
    and ``probelab-sae-*`` folders older probelab versions left in the cache root after a kill."""
    root = Path(root) if root is not None else cache_dir()
    done = []
    now = time.time()
    with contextlib.suppress(OSError):
        for e in os.scandir(root / "tmp"):
            m = SCRATCH.search(e.name)
            with contextlib.suppress(OSError):
                mtime = e.stat(follow_symlinks=False).st_mtime
                if (m and not pid_owns(int(m["pid"]), mtime)) or (not m and now - mtime > LEGACY_AGE_S):
                    _remove(Path(e.path))
                    done.append(Path(e.path))
    with contextlib.suppress(OSError):
        for e in os.scandir(root):
            if e.name.startswith("probelab-sae-") and e.is_dir(follow_symlinks=False):
                newest = max([e.stat().st_mtime] + [c.stat().st_mtime for c in os.scandir(e.path)])
                if now - newest > LEGACY_AGE_S:
                    _remove(Path(e.path))
                    done.append(Path(e.path))
    done += clean_leftovers(root)
    return done


_cleaned: set[str] = set()


def clean_cache_leftovers() -> None:
    """What every ``probelab`` command does first: remove scratch folders of dead processes from
    an existing cache (never creates the cache)."""
    root = Path(os.environ.get("PROBELAB_CACHE") or Path.home() / ".cache" / "probelab")
    if root.is_dir():
        _clean_cache_once(str(root))


def _clean_cache_once(root: str) -> None:
    if root in _cleaned:
        return
    _cleaned.add(root)
    with contextlib.suppress(OSError):
        clean_scratch(root)


def scratch_root() -> Path:
    """``$PROBELAB_CACHE/tmp``, where scratch folders go (named ``PREFIX-PID-XXXX``), cleaned of
    those of dead processes first."""
    root = cache_dir() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    clean_scratch(root.parent)
    return root


@contextlib.contextmanager
def scratch_dir(prefix: str = "probelab-") -> Iterator[Path]:
    """A private scratch folder under ``$PROBELAB_CACHE/tmp``, removed on exit (exceptions, Ctrl-C
    and SIGTERM through the CLI included); after a SIGKILL the next probelab run removes it."""
    root = scratch_root()
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- output folders ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("probelab")
    except Exception:
        return "unknown"


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest probelab wrote into ``folder`` (None when there is none or it is unreadable)."""
    f = Path(folder) / MANIFEST
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None


def output_files(folder: str | os.PathLike) -> list[Path]:
    """The files probelab wrote into output ``folder``, from its manifest: regular files inside the
    folder only (no links, nothing outside it). Empty when the folder has no manifest."""
    folder = Path(folder)
    man = read_manifest(folder)
    if man is None:
        return []
    root = folder.resolve()
    out = []
    for rel in man.get("files", []):
        if not isinstance(rel, str) or os.path.isabs(rel) or ".." in Path(rel).parts:
            continue
        p = folder / rel
        if p.is_file() and not p.is_symlink() and p.resolve().is_relative_to(root):
            out.append(p)
    return out


def _protected(resolved: Path) -> str | None:
    """Why ``resolved`` must never be replaced (None when it may be)."""
    home = Path.home().resolve()
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        cwd = None
    if resolved == Path(resolved.anchor):
        return "the file-system root"
    if resolved == home:
        return "your home folder"
    if cwd is not None and resolved == cwd:
        return "the current folder"
    if cwd is not None and resolved in cwd.parents:
        return "a parent of the current folder"
    if resolved in home.parents:
        return "a parent of your home folder"
    cache = Path(os.environ.get("PROBELAB_CACHE") or Path.home() / ".cache" / "probelab").resolve()
    if resolved == cache:
        return "the probelab cache folder"
    return None


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _listing(folder: Path) -> list[str]:
    return sorted(e for e in os.listdir(folder) if e != MANIFEST)


def _show(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def check_out(target: str | os.PathLike, kind: str = "output", overwrite: bool = False,
              new_files: Iterable[str] = (), option: str = "--out", _locked: bool = False) -> Path:
    """Check that ``target`` may be written as an output of ``kind`` (rules in the module docstring);
    return it as an absolute path. Raises :class:`OutputError` (one line) otherwise.

    Call it before the work starts so that a refused ``--out`` costs nothing; :func:`atomic_dir`
    checks again when it renames the result into place. ``new_files``: top-level names the output
    will hold (an older output holding only those is replaced).
    """
    raw = os.fspath(target)
    if raw.strip() == "":
        raise OutputError(f"{option} is empty: give a folder name")
    path = Path(os.path.abspath(os.path.expanduser(raw)))
    try:
        resolved = path.resolve()
    except OSError as e:
        raise OutputError(f"cannot use {option} {raw}: {e.strerror or e}") from None
    why = _protected(resolved)
    if why is not None:
        raise OutputError(f"{option} {raw} is {why}; probelab writes an output folder as a whole and never "
                          f"replaces that one: give a new folder inside it (e.g. {os.path.join(raw, 'NAME')})")
    try:  # one lstat: another writer may swap the folder between two separate checks
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # missing, or under a file (reported below)
        st = None
    except OSError as e:
        raise OutputError(f"cannot use {option} {raw}: {e.strerror or e}") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{option} {raw} is a symbolic link; give the folder it points to, or a new name")
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{option} {raw} is a file, not a folder: probelab never replaces a file with a "
                          "folder; choose another name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {option} {raw}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {option} {raw}: {parent} is not writable (permission denied)")
    if st is None:
        return path
    try:
        existing = _listing(path)
    except FileNotFoundError:  # replaced by another writer right now: its commit is checked under the lock
        return path
    except OSError as e:
        raise OutputError(f"cannot read {option} {raw}: {e.strerror or e}") from None
    if not existing or overwrite:
        return path
    if not _locked:  # a refusal is confirmed under the writers' lock (not in the middle of another's swap)
        from .locks import file_lock

        with file_lock(path.parent, what=path):
            return check_out(target, kind, overwrite, new_files, option, _locked=True)
    man = read_manifest(path)
    if man is not None:
        if man.get("kind") == kind:
            return path
        by = f" (written by `{man['command']}`)" if man.get("command") else ""
        raise OutputExists(f"{option} {raw} holds a probelab {man.get('kind', '?')} output{by}, not a {kind}; "
                           f"pass --overwrite to replace it, or choose another {option}")
    known = set(new_files)
    patterns = KIND_FILES.get(kind, ())
    if all(n in known or _matches(n, patterns) for n in existing):
        return path  # an earlier output of this kind (written before manifests)
    raise OutputExists(f"{option} {raw} already exists and holds files probelab did not write ({_show(existing)}); "
                       f"pass --overwrite to replace the whole folder, or choose another {option}")


def _command() -> str:
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if prog in ("probelab", "cli.py", "__main__.py", "-m", "-c"):
        prog = "probelab"
    return " ".join([prog, *sys.argv[1:]])[:2000]


def _write_manifest(folder: Path, kind: str, extra: dict | None) -> None:
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and not p.is_symlink() and p.name != MANIFEST)
    data = {"format": MANIFEST_FORMAT, "kind": kind, "command": _command(), "version": _version(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pid": os.getpid(), "files": files}
    if extra:
        data.update(extra)
    (folder / MANIFEST).write_text(json.dumps(data, indent=1), encoding="utf-8")


def _os_error(e: OSError, what: Path) -> OutputError:
    return OutputError(f"cannot write {what}: {e.strerror or e}")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False, kind: str = "output",
               extra: dict | None = None, lock_timeout: float | None = None) -> Iterator[Path]:
    """Write a folder atomically: yield a temp folder beside ``target``, rename it into place on success.

    On an exception (Ctrl-C included) the temp folder is removed and ``target`` is left as it was,
    so a failed command never leaves a half-written output folder. ``kind`` names the output (its
    manifest records it); :func:`check_out` decides whether an existing ``target`` may be replaced
    (``overwrite`` = the user's ``--overwrite``). Writers of one path are serialised by a lock on
    the parent folder; ``extra`` adds fields to the manifest.
    """
    from .locks import file_lock

    path = check_out(target, kind, overwrite)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with file_lock(parent, lock_timeout, what=path):
            clean_leftovers(parent, path.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=parent))
    except OutputError:
        raise
    except OSError as e:
        raise _os_error(e, path) from None
    try:
        _usual_mode(tmp, directory=True)
        yield tmp
        _write_manifest(tmp, kind, extra)
        _usual_modes_below(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        with file_lock(parent, lock_timeout, what=path):
            check_out(path, kind, overwrite, new_files=os.listdir(tmp), _locked=True)
            if path.is_dir():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{os.getpid()}-", dir=parent))
                os.replace(path, old)  # onto the empty placeholder (a folder may replace an empty one)
            os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.lexists(path):
            with contextlib.suppress(OSError):
                os.replace(old, path)  # put the old output back
            if not os.path.lexists(path):
                old = None  # could not restore: keep it (the next run renames it back)
        if isinstance(e, OSError):
            raise _os_error(e, path) from e
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (temp file in the same folder + rename)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file atomically (temp file in the same folder + rename): readers see the old file or
    the whole new one, never a part. The temp file's name carries the pid, so one left by a killed
    process is removed by a later write of the same file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _usual_mode(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def alignment_files(folder: str | os.PathLike) -> list[Path]:
    """The files an alignment folder's manifest lists (top-level only); for a folder from before
    manifests, its top-level ``metrics.json``, ``report.html`` and CSV tables. Links, hidden files
    and anything else in the folder are never included (the app offers these for download)."""
    folder = Path(folder)
    if read_manifest(folder) is not None:
        files = [p for p in output_files(folder) if p.parent == folder]
    else:
        files = [p for p in folder.iterdir() if _matches(p.name, KIND_FILES["alignment"])
                 and p.is_file() and not p.is_symlink()]
    return sorted(files, key=lambda p: p.name)
