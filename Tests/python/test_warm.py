"""warm.py: attach and zygote (TSEXPORT_WARM): the key, the private folder, a warm worker on the caller's own pipes,
a child killed with its caller, the idle exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from workerkit import worker_env


def test_the_key_follows_interpreter_code_and_environment_but_not_volatile_names() -> None:
    from tsexport_worker.runtime.warm import key

    base = {"PATH": "/usr/bin", "HOME": "/root", "PWD": "/a", "SHLVL": "1"}
    assert key(base) == key({**base, "PWD": "/b", "SHLVL": "3", "_": "/usr/bin/env"})
    assert key(base) != key({**base, "HF_HUB_OFFLINE": "1"})
    assert key(base) != key({**base, "PATH": "/opt/bin"})
    assert len(key(base)) == 24


def test_only_a_private_folder_of_this_user_is_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tsexport_worker.runtime.warm import private_dir

    fresh = tmp_path / "warm"
    assert private_dir(str(fresh)) == str(fresh)
    assert fresh.stat().st_mode & 0o777 == 0o700
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    assert private_dir(str(open_dir)) is None
    assert "is not a private directory of this user (mode 0o755)" in capsys.readouterr().err
    link = tmp_path / "link"
    link.symlink_to(fresh)
    assert private_dir(str(link)) is None  # a symlink is not the folder itself


class Attached:
    """`python -m tsexport_worker attach` with pipes, as the Swift side starts it."""

    def __init__(self, folder: Path, idle: int = 30) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "tsexport_worker", "attach", "--dir", str(folder), "--idle", str(idle)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env(),
            cwd="/",
        )
        assert self.proc.stdout is not None
        self.hello = json.loads(self.proc.stdout.readline())

    def request(self, op: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"id": 1, "op": op}) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))


def _zygote_pid(folder: Path, timeout: float = 60.0) -> int:
    """The pid of the zygote once its socket is listening (its log's `ready` line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in folder.glob("*.log"):
            for line in log.read_text().splitlines():
                if ": ready on " in line and list(folder.glob("*.sock")):
                    return int(line.split("tsexport warm worker ", 1)[1].split(":", 1)[0])
        time.sleep(0.2)
    raise AssertionError(f"no zygote became ready in {folder}: {[p.name for p in folder.iterdir()]}")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return status not in ("Z", "X")


def test_a_warm_worker_serves_on_the_callers_pipes_and_dies_with_its_caller(tmp_path: Path) -> None:
    folder = tmp_path / "warm"
    first = Attached(folder)  # no zygote yet: this one is served cold and starts one for next time
    assert first.hello["type"] == "hello" and first.request("probe")["ok"] is True
    assert first.request("shutdown")["ok"] is True
    assert first.proc.wait(timeout=30) == 0
    zygote = _zygote_pid(folder)
    try:
        sock = next(folder.glob("*.sock"))
        assert sock.stat().st_mode & 0o777 == 0o600
        assert folder.stat().st_mode & 0o777 == 0o700

        warm = Attached(folder)
        assert warm.hello["type"] == "hello" and warm.hello["protocol"] == 2
        children = _children(zygote)
        assert len(children) == 1, "the warm worker is a child of the zygote, not the attach process"
        assert children[0] != warm.proc.pid
        answer = warm.request("nonsense")  # the child's answers come back on the caller's own stdout
        assert answer["ok"] is False and answer["code"] == "bad_request"
        assert warm.request("shutdown")["ok"] is True
        assert warm.proc.wait(timeout=30) == 0  # the child's exit status, relayed

        doomed = Attached(folder)
        child = _children(zygote)[0]
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "a child whose caller died is killed"
        assert _alive(zygote)
    finally:
        os.kill(zygote, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(zygote) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(folder.glob("*.sock")), "a zygote that leaves takes its socket with it"


def test_a_zygote_leaves_after_its_idle_time(tmp_path: Path) -> None:
    folder = tmp_path / "warm"
    first = Attached(folder, idle=2)
    first.request("shutdown")
    first.proc.wait(timeout=30)
    zygote = _zygote_pid(folder)
    deadline = time.monotonic() + 30
    while _alive(zygote) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(zygote)
    assert not list(folder.glob("*.sock"))
