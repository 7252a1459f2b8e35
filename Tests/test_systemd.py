"""systemd without systemd running: `systemd-socket-activate` (Debian `systemd`) binds the
listening socket and starts aws with LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES, as a socket unit
would; a Unix datagram socket of the test stands for NOTIFY_SOCKET and receives aws's
readiness messages (READY=1, RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 at SIGTERM).

systemd-socket-activate (without --accept) waits for the first connection before it starts
the program: each test connects first, then reads the notifications.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid

import pytest

import awstest
from awstest import HOST, free_port, read_text, wait_for




class Activated:
    """aws started by systemd-socket-activate on a free port, with a test NOTIFY_SOCKET."""

    def __init__(self, root: str, log_dir: str, args=(), fdname: str | None = "http", abstract: bool = False):
        if not shutil.which("systemd-socket-activate"):
            pytest.fail("systemd-socket-activate is missing (Debian package systemd; make deps)", pytrace=False)
        self.dir = tempfile.mkdtemp(prefix="aws-systemd-", dir=log_dir)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"aws-test-notify-{uuid.uuid4().hex}"
            self.notify.bind("\0" + name)
            notify_env = "@" + name
        else:
            notify_env = os.path.join(self.dir, "notify.sock")
            self.notify.bind(notify_env)
        self.notify.settimeout(10.0)
        self.port = free_port()
        self.aws_port = free_port()  # what aws would bind on its own: must stay unused
        self.stderr_path = os.path.join(self.dir, "aws.stderr")
        self.err = open(self.stderr_path, "wb")
        names = [f"--fdname={fdname}"] if fdname else []
        cmd = ["systemd-socket-activate", "-l", f"{HOST}:{self.port}", *names, "-E", f"NOTIFY_SOCKET={notify_env}",
               awstest.aws_bin(), "--root", root, "--address", HOST, "--port", str(self.aws_port), "--log-level", "info",
               *awstest.aws_test_args(args), *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err, start_new_session=True)
        # Listening (systemd-socket-activate says so on stderr) before the first connection.
        assert wait_for(lambda: "Listening on" in self.stderr() or self.proc.poll() is not None, 10.0), self.stderr()
        assert self.proc.poll() is None, self.stderr()

    def stderr(self) -> str:
        return read_text(self.stderr_path)

    def message(self) -> str:
        try:
            return self.notify.recv(4096).decode()
        except socket.timeout:
            pytest.fail(f"no notification within 10 s; stderr:\n{self.stderr()[-3000:]}", pytrace=False)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        self.err.close()
        self.notify.close()


@pytest.fixture
def activated(docroot, log_dir):
    started = []

    def start(**kw) -> Activated:
        a = Activated(docroot.root, log_dir, **kw)
        started.append(a)
        return a
    yield start
    for a in started:
        a.stop()


def served(port: int, path: str = "/static/x.txt") -> bytes:
    r = awstest.get(port, path, timeout=10.0)
    assert r.status == 200, r
    return r.body


def test_serves_the_passed_socket_and_notifies(activated):
    a = activated()
    # The first connection starts aws; it waits in the passed socket's backlog meanwhile.
    first = awstest.connect(a.port)
    first.sendall(b"GET /static/x.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    assert a.message() == "READY=1"
    r = awstest.read_response(first)
    assert r.status == 200 and r.body == b"x marks the spot\n"
    first.close()
    assert served(a.port) == b"x marks the spot\n"
    assert "socket from systemd" in a.stderr(), a.stderr()
    # aws did not bind its own --port.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, a.aws_port), timeout=2).close()

    os.kill(a.proc.pid, signal.SIGHUP)
    reloading = a.message()
    lines = reloading.split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC="), reloading
    assert int(lines[1].split("=", 1)[1]) > 0
    assert a.message() == "READY=1"
    assert served(a.port) == b"x marks the spot\n"

    os.kill(a.proc.pid, signal.SIGTERM)
    assert a.message() == "STOPPING=1"
    assert a.proc.wait(10) == 0, a.stderr()


def test_workers_share_one_passed_socket(activated):
    a = activated(args=("--workers", "3"), abstract=True)
    first = awstest.connect(a.port)
    assert a.message() == "READY=1"
    first.close()
    for i in range(12):
        assert served(a.port, f"/static/x.txt?{i}") == b"x marks the spot\n"
    os.kill(a.proc.pid, signal.SIGTERM)
    assert a.message() == "STOPPING=1"
    assert a.proc.wait(10) == 0, a.stderr()


def test_unnamed_socket_is_http(activated):
    a = activated(fdname=None)
    first = awstest.connect(a.port)
    assert a.message() == "READY=1"
    first.close()
    assert served(a.port) == b"x marks the spot\n"


def test_https_socket_without_certificate_is_refused(activated):
    a = activated(fdname="https")
    awstest.connect(a.port).close()
    assert a.proc.wait(10) != 0
    assert 'a socket named "https" was passed: give --tls-cert and --tls-key' in a.stderr(), a.stderr()


def test_variables_for_another_process_are_ignored(docroot, log_dir):
    """LISTEN_PID of another process: inherited, not ours; aws binds its own port."""
    env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID="1")
    srv = awstest.Server(docroot.root, log_dir=log_dir, name="listen-other")
    srv.choose_ports()
    err = open(os.path.join(log_dir, f"listen-other-{uuid.uuid4().hex}.stderr"), "wb")
    proc = subprocess.Popen(srv.cmd, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
    try:
        def up():
            try:
                return awstest.get(srv.port, "/static/x.txt", timeout=1.0).status == 200
            except OSError:
                return False
        assert wait_for(up, 10.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        err.close()


def test_unit_files_verify(tmp_path):
    """contrib/aws.service and aws.socket as systemd reads them (with ExecStart pointing at the
    binary under test: verify checks that the program exists)."""
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.fail("systemd-analyze is missing (Debian package systemd; make deps)", pytrace=False)
    contrib = os.path.join(awstest.REPO, "contrib")
    for name in ("aws.service", "aws.socket"):
        with open(os.path.join(contrib, name)) as f:
            text = f.read()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/aws", awstest.aws_bin()))
    r = subprocess.run([tool, "verify", str(tmp_path / "aws.socket"), str(tmp_path / "aws.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stdout + r.stderr
    service = (tmp_path / "aws.service").read_text()
    for setting in ("Type=notify", "ProtectSystem=strict", "NoNewPrivileges=yes", "ProtectHome=yes", "PrivateTmp=yes",
                    "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                    "ExecReload=/bin/kill -HUP $MAINPID"):
        assert f"\n{setting}\n" in service, setting
    assert "FileDescriptorName=http\n" in (tmp_path / "aws.socket").read_text()


def test_the_readme_shows_the_unit_as_it_is():
    """The README's systemd section quotes contrib/aws.service whole: the two cannot drift."""
    readme = awstest.read_text(os.path.join(awstest.REPO, "README.md"))
    section = readme.split("### systemd", 1)[1]
    quoted = section.split("```ini\n", 1)[1].split("```", 1)[0]
    assert quoted == awstest.read_text(os.path.join(awstest.REPO, "contrib", "aws.service"))
