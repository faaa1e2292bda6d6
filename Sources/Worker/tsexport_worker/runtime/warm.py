"""Warm workers: `attach` and `zygote`, so repeated commands skip importing torch and transformers (about 3 s).

The Swift side opts in (TSEXPORT_WARM) by starting `python -m tsexport_worker attach --dir DIR --idle SECONDS`
instead of `serve`. `attach` is a small process that starts in tens of milliseconds because it imports nothing heavy:

- it computes a key from the interpreter, the worker's source files and the environment, and connects to the Unix
  socket `DIR/<key>.sock`;
- when a zygote answers, it hands over its own stdin, stdout and stderr (SCM_RIGHTS) with its working directory
  and environment. The zygote forks a child that serves the protocol on exactly those descriptors, so the caller sees
  the same pipes, the same stderr and (relayed by `attach`) the same exit status as from a cold worker;
- when none answers, it starts one in the background for the next command and serves this one itself, cold.

The zygote imports torch, transformers and the worker's modules once, then waits. Each child is a new process that
has loaded no model: the verifying worker stays a process that never traced the model.

Safety: DIR is created 0700 and refused unless it is a real directory owned by this user with no group or other
access; the socket is 0600 and the zygote also checks the peer's uid (SO_PEERCRED). The key changes when the
interpreter, the worker's code or any environment variable changes, so a stale zygote is never reached; before each
fork the zygote re-reads the installed torch and transformers versions and retires itself if they changed. It exits
after `--idle` seconds without a connection or a child. A child whose `attach` dies (killed, interrupted) is killed.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.metadata
import json
import os
import selectors
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Variables that differ between otherwise identical shells and never change what a worker does.
VOLATILE_ENV = ("_", "PWD", "OLDPWD", "SHLVL")
HEADER = struct.Struct("!I")
# The distributions whose versions a zygote re-checks, and the modules it imports once: transformers' lazy
# modeling_utils is most of a model class's first import (2.3 s of the 2.4 s BertModel takes on 2 cores).
DISTRIBUTIONS = ("torch", "transformers", "safetensors")
PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "transformers.tokenization_utils_base",
           "safetensors.torch")


def worker_digest() -> str:
    """sha256 over the worker package's Python files (names and contents)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def key(environment: dict[str, str]) -> str:
    """What a zygote must share with its callers: interpreter, worker code, environment (volatile names aside)."""
    env = {k: v for k, v in environment.items() if k not in VOLATILE_ENV}
    blob = json.dumps([os.path.realpath(sys.executable), sys.version, worker_digest(), sorted(env.items())])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def private_dir(path: str) -> str | None:
    """DIR, created 0700 if absent; None (with the reason on stderr) unless it is this user's and private."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        sys.stderr.write(f"tsexport warm worker: cannot use {path}: {exc}; starting cold\n")
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        sys.stderr.write(f"tsexport warm worker: {path} is not a private directory of this user (mode "
                         f"{oct(info.st_mode & 0o777)}); starting cold\n")
        return None
    return path


def loaded_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# ---------------------------------------------------------------------------------------------------------------
# attach


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    body = json.dumps(message).encode()
    data = HEADER.pack(len(body)) + body
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


def _read_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = b""
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return chunks


def _receive(sock: socket.socket) -> dict[str, Any] | None:
    head = _read_exact(sock, HEADER.size)
    if head is None:
        return None
    body = _read_exact(sock, HEADER.unpack(head)[0])
    return None if body is None else dict(json.loads(body))


def _exit_like(status: int) -> int:
    """Leave as the child did: the same exit code, or killed by the same signal."""
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


def attach(directory: str, idle: int) -> int:
    """Serve through a warm zygote when one answers; else start one for next time and serve cold."""
    private = private_dir(directory)
    if private is not None:
        name = key(dict(os.environ))
        path = os.path.join(private, f"{name}.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            _send(sock, {"cwd": os.getcwd(), "env": dict(os.environ)}, [0, 1, 2])
            started = _receive(sock)
            if started is not None and "pid" in started:
                done = _receive(sock)  # blocks until the child exits (or the zygote dies: then treat as killed)
                return _exit_like(int(done["exit"]) if done is not None else -signal.SIGKILL)
            # refused (the installed versions changed: that zygote retires) or closed: a new one, and serve cold
            _spawn_zygote(private, name, idle)
        except OSError:
            _spawn_zygote(private, name, idle)
        finally:
            sock.close()
    from ..serve import serve

    return serve()


def _spawn_zygote(directory: str, name: str, idle: int) -> None:
    log_fd = os.open(os.path.join(directory, f"{name}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log = os.fdopen(log_fd, "ab")
    subprocess.Popen(
        [sys.executable, "-u", "-m", "tsexport_worker", "zygote", "--dir", directory, "--key", name,
         "--idle", str(idle)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
    )
    log.close()


# ---------------------------------------------------------------------------------------------------------------
# zygote


def _child(conn: socket.socket, listener: socket.socket, lock: int, fds: list[int], header: dict[str, Any]) -> None:
    """In the forked child: become a worker on the caller's descriptors, in its directory and environment."""
    try:
        listener.close()
        conn.close()
        os.close(lock)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(str(header["cwd"]))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(header["env"]).items()})
        from ..serve import serve

        code = serve()
    except BaseException:  # noqa: BLE001 - never return into the zygote's loop
        code = 70
    os._exit(code)


def zygote(directory: str, name: str, idle: int) -> int:
    private = private_dir(directory)
    if private is None:
        return 1
    lock = os.open(os.path.join(private, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another zygote for this key is alive
    for module in PRELOAD:
        importlib.import_module(module)
    from ..export import export  # noqa: F401  (the worker's own heavy imports)
    from ..verify import verify  # noqa: F401  (the worker's own heavy imports)

    versions = loaded_versions()
    path = os.path.join(private, f"{name}.sock")
    if os.path.exists(path):
        os.unlink(path)  # a stale socket: we hold the lock, so no zygote owns it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    bound = os.stat(path).st_ino
    listener.listen(16)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave through `finally`: the socket goes too
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    last = time.monotonic()
    sys.stderr.write(f"tsexport warm worker {os.getpid()}: ready on {path} (idle {idle} s), {versions}\n")
    try:
        while True:
            for event, _ in selector.select(timeout=0.05):
                if event.fileobj is listener:
                    conn, _ = listener.accept()
                    last = time.monotonic()
                    if not _serve_connection(conn, listener, lock, versions, children, selector):
                        return 0
                else:
                    # the attach process of a running child closed its end: it is gone, so is the child
                    conn = event.fileobj  # type: ignore[assignment]
                    for pid, owner in list(children.items()):
                        if owner is conn:
                            os.kill(pid, signal.SIGKILL)
                    selector.unregister(conn)
            _reap(children, selector)
            if children:
                last = time.monotonic()
            elif time.monotonic() - last > idle:
                return 0
    finally:
        try:
            if os.stat(path).st_ino == bound:
                os.unlink(path)  # ours still (a successor would have taken the lock first)
        except FileNotFoundError:
            pass
        listener.close()
        os.close(lock)


def _serve_connection(conn: socket.socket, listener: socket.socket, lock: int, versions: dict[str, str | None],
                      children: dict[int, socket.socket], selector: selectors.BaseSelector) -> bool:
    """Fork a child for one caller; False when the zygote must retire (installed versions changed)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    if uid != os.getuid():
        conn.close()
        return True
    fds: list[int] = []
    try:
        # The descriptors ride on the first bytes: read them with recv_fds, or the kernel drops them.
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        while len(data) < HEADER.size:
            more = conn.recv(HEADER.size - len(data))
            if not more:
                raise ValueError("the caller closed before its header")
            data += more
        size = HEADER.unpack(data[:HEADER.size])[0]
        body = data[HEADER.size:]
        while len(body) < size:
            more = conn.recv(size - len(body))
            if not more:
                raise ValueError("the caller closed inside its header")
            body += more
        header = dict(json.loads(body))
    except (OSError, ValueError, struct.error):
        for fd in fds:
            os.close(fd)
        conn.close()
        return True
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        conn.close()
        return True
    now = loaded_versions()
    if now != versions:
        _send(conn, {"refused": f"installed versions changed from {versions} to {now}"})
        for fd in fds:
            os.close(fd)
        conn.close()
        return False
    pid = os.fork()
    if pid == 0:
        _child(conn, listener, lock, fds, header)
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    selector.register(conn, selectors.EVENT_READ)
    _send(conn, {"pid": pid})
    sys.stderr.write(f"tsexport warm worker {os.getpid()}: worker {pid} for a caller in {header.get('cwd')}\n")
    return True


def _reap(children: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        try:
            selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        try:
            _send(conn, {"exit": code})
        except OSError:
            pass
        conn.close()
