"""torch.compile's on-disk cache (inductor's, in $TORCHINDUCTOR_CACHE_DIR or /tmp/torchinductor_<user>)
kept loadable.

Inductor builds each C++ kernel into `<cache>/<xx>/<key>.main.so` and, later, reuses any file at
that path without looking inside. A compile stopped half-way (the C++ compiler killed by the same
Ctrl-C as the run) can leave the library empty or cut short, and every later compiled run of that
network then fails with `ImportError: ... file too short` until the file is deleted. Before a
compiled run such libraries are found (their ELF tables must lie inside the file) and removed under
the kernel's own lock (a compile of it in flight holds that lock), so that inductor rebuilds them.
"""
from __future__ import annotations

import logging
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
ELF_MAGIC = b"\x7fELF"


def inductor_cache_dir() -> Path:
    # deferred: torch._inductor loads a good part of the compiler stack. Private, as the compile
    # cache's location has no public API; only its folder is read from it.
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir())


def elf_complete(path: Path) -> bool:
    """Whether a shared library holds its whole ELF header, program and section header tables
    (the linker writes the section headers last, at the end of the file)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return False
    if len(head) < 52 or head[:4] != ELF_MAGIC or head[4] not in (1, 2) or head[5] not in (1, 2):
        return False
    order = "little" if head[5] == 1 else "big"

    def field(lo: int, hi: int) -> int:
        return int.from_bytes(head[lo:hi], order)

    if head[4] == 2:  # 64-bit
        if len(head) < 64:
            return False
        phoff, shoff = field(0x20, 0x28), field(0x28, 0x30)
        phentsize, phnum, shentsize, shnum = field(0x36, 0x38), field(0x38, 0x3A), field(0x3A, 0x3C), field(0x3C, 0x3E)
    else:
        phoff, shoff = field(0x1C, 0x20), field(0x20, 0x24)
        phentsize, phnum, shentsize, shnum = field(0x2A, 0x2C), field(0x2C, 0x2E), field(0x2E, 0x30), field(0x30, 0x32)
    return size >= phoff + phentsize * phnum and size >= shoff + shentsize * shnum


def damaged_libraries(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*.so") if p.is_file() and not elf_complete(p))


def repair_compile_cache(root: Path | None = None) -> list[Path]:
    """Remove the damaged kernel libraries of the cache (inductor rebuilds them); say so once,
    naming the cache. Returns what was removed."""
    root = Path(root) if root is not None else inductor_cache_dir()
    if not root.is_dir():
        return []
    removed = []
    for lib in damaged_libraries(root):
        lock = root / "locks" / (lib.name.split(".", 1)[0] + ".lock")
        try:
            lock.parent.mkdir(exist_ok=True)
            with FileLock(str(lock), timeout=0):
                if lib.exists() and not elf_complete(lib):
                    lib.unlink()
                    removed.append(lib)
        except Timeout:
            continue  # another process is building it right now
        except OSError:
            continue
    if removed:
        log.warning("torch.compile's cache %s held %d damaged kernel %s (left by an interrupted compile, "
                    "e.g. %s); removed, they are rebuilt now.", root, len(removed),
                    "library" if len(removed) == 1 else "libraries", removed[0].name)
    return removed
