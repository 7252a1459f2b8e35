"""pytest harness for the aws end-to-end tests.

Fixtures:
  docroot      session: a fresh document root in a temp dir (see awstest.make_docroot)
  server       the shared server (session-scoped process). If a test kills it, that test
               fails with the server's stderr and the next test gets a fresh server.
  make_server  factory for extra servers with extra args / a command prefix (strace);
               each is stopped at the end of the test and must not have crashed.
"""

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import awstest  # noqa: E402


@pytest.fixture(scope="session")
def docroot():
    d = awstest.make_docroot()
    yield d
    shutil.rmtree(d.base, ignore_errors=True)


@pytest.fixture(scope="session")
def log_dir():
    import tempfile
    d = tempfile.mkdtemp(prefix="aws-log-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class _Shared:
    """Holds the session server; restarts it if a previous test crashed it."""

    def __init__(self, docroot, log_dir):
        self.docroot = docroot
        self.log_dir = log_dir
        self.server = None
        self.crashes = []

    def get(self):
        if self.server is None or not self.server.alive():
            self.server = awstest.Server(self.docroot.root, args=[],
                                         log_dir=self.log_dir, name="shared")
            try:
                self.server.start()
            except RuntimeError as e:
                pytest.fail(str(e), pytrace=False)
        return self.server


@pytest.fixture(scope="session")
def _shared(docroot, log_dir):
    shared = _Shared(docroot, log_dir)
    yield shared
    if shared.server is not None:
        rc, killed = shared.server.stop()
        assert not killed, "shared server did not exit within 5 s of SIGTERM"
        msg = shared.server.crash_message(rc)
        assert msg is None, msg


@pytest.fixture
def server(_shared):
    srv = _shared.get()
    yield srv
    if not srv.alive():
        rc, _ = srv.stop()
        pytest.fail(f"the server died during this test (exit {rc}); stderr tail:\n{srv.stderr()[-3000:]}",
                    pytrace=False)


@pytest.fixture
def make_server(docroot, log_dir):
    """make_server(args=[...], prefix=[...], root=None) -> started awstest.Server."""
    started = []

    def factory(args=(), prefix=(), root=None, ready_timeout=10.0, name="extra"):
        srv = awstest.Server(root or docroot.root, args=args, prefix=prefix, log_dir=log_dir,
                             ready_timeout=ready_timeout, name=name)
        started.append(srv)
        try:
            srv.start()
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)
        return srv

    yield factory
    problems = []
    for srv in started:
        if srv.proc is None:
            continue
        rc, killed = srv.stop()
        msg = srv.crash_message(rc)
        if msg:
            problems.append(msg)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
