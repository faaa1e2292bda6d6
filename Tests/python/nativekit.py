"""The C++ programs the tests build against this Python's libtorch, each built once and shared.

A program is built into ${XDG_CACHE_HOME:-~/.cache}/tsexport/test-native/<key>/, where the key is the sha256 of its
sources, its build command and the torch it links, so pytest and the Swift tests (which ask
`python Tests/python/nativekit.py generate`) reuse one build until one of those changes.

g++ is required where `CI` is set: a missing compiler fails there; elsewhere the test is skipped with the install line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NATIVE = Path(__file__).resolve().parent / "native"
GENERATE = REPO / "examples" / "generate"


def compiler() -> str:
    """g++ from PATH; a failure in CI, a skip elsewhere, when it is missing."""
    found = shutil.which("g++")
    if found is not None:
        return found
    import pytest

    message = "g++ cannot be found on PATH (install it: apt-get install -y g++); the libtorch checks need it"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI requires it (scripts/bootstrap --test installs it)")
    pytest.skip(message)


def _torch_dir() -> Path:
    import torch

    return Path(torch.__file__).resolve().parent


def _cached(name: str, sources: list[Path], argv: list[str]) -> Path:
    """The cached program `name`, built (when not there yet) by running argv with {OUT} replaced by its path."""
    import torch

    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    digest.update("\0".join([*argv, torch.__version__, str(_torch_dir()), sys.executable]).encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tsexport" / "test-native"
    folder = cache / digest.hexdigest()[:16]
    binary = folder / name
    if binary.is_file():
        return binary
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out = Path(tmp) / name
        built = subprocess.run([arg.replace("{OUT}", str(out)) for arg in argv], capture_output=True, text=True, timeout=900)
        if built.returncode != 0:
            raise AssertionError(f"building {name} failed:\n{built.stderr[-4000:]}")
        os.replace(out, binary)  # atomic: a concurrent build of the same key leaves one complete file
    return binary


def libtorch_program(source_name: str) -> Path:
    """Tests/python/native/<source_name> (a .cpp) compiled and linked against this Python's libtorch."""
    source = NATIVE / source_name
    torch_dir = _torch_dir()
    import torch

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    argv = [
        compiler(), "-std=c++17", "-O1", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-I{torch_dir / 'include'}", f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        str(source), "-o", "{OUT}",
        f"-L{torch_dir / 'lib'}", f"-Wl,-rpath,{torch_dir / 'lib'}", "-ltorch", "-ltorch_cpu", "-lc10",
    ]  # fmt: skip
    return _cached(source.stem, [source], argv)


def generate_example() -> Path:
    """examples/generate (the libtorch greedy-generation example) built by its build.sh against this Python's torch."""
    compiler()
    sources = sorted(p for p in GENERATE.iterdir() if p.is_file())
    build = ["bash", str(GENERATE / "build.sh"), sys.executable, "{OUT}"]
    return _cached("generate", sources, build)


if __name__ == "__main__":
    # `python nativekit.py generate`: prints the path of the built example (used by the Swift tests).
    if sys.argv[1:] != ["generate"]:
        sys.exit("usage: nativekit.py generate")
    print(generate_example())
