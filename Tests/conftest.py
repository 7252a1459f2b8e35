"""pytest harness for the aws end-to-end tests.

Fixtures:
  docroot      session: a fresh document root in a temp dir (see awstest.make_docroot)
  server       the shared server (session-scoped process). If a test kills it, that test
               fails with the server's stderr and the next test gets a fresh server.
  make_server  factory for extra servers with extra args / a command prefix (strace);
               each is stopped at the end of the test and must not have crashed.

Every server gets the arguments in the environment variable AWS_TEST_ARGS (shell-split) before
its own (see awstest.aws_test_args); `make test` runs the suite once without and once with
AWS_TEST_ARGS="--workers 1". The header pytest prints says which.
"""

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import awstest  # noqa: E402


def pytest_report_header(config):
    extra = os.environ.get("AWS_TEST_ARGS", "")
    return [f"aws binary: {awstest.aws_bin()}",
            f"AWS_TEST_ARGS: {extra!r} (appended to every server's arguments)" if extra
            else "AWS_TEST_ARGS: none (servers run with their defaults, e.g. --workers auto)"]


def pytest_terminal_summary(terminalreporter):
    # Shown with -q too (the header is not): says which pass of `make test` this was.
    extra = os.environ.get("AWS_TEST_ARGS", "")
    terminalreporter.write_line(f"aws servers ran with AWS_TEST_ARGS={extra!r}" if extra
                                else "aws servers ran with their defaults (AWS_TEST_ARGS empty)")


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
    """make_server(args=[...], prefix=[...], root=None, test_args=True) -> started awstest.Server.
    test_args=False: without AWS_TEST_ARGS (for tests of the server's own defaults)."""
    started = []

    def factory(args=(), prefix=(), root=None, ready_timeout=10.0, name="extra", test_args=True):
        srv = awstest.Server(root or docroot.root, args=args, prefix=prefix, log_dir=log_dir,
                             ready_timeout=ready_timeout, name=name, test_args=test_args)
        started.append(srv)
        try:
            srv.start()
        except RuntimeError as e:
            # Already reported here, and the process is gone (start() kills one that never
            # became ready): not again as a teardown error.
            started.remove(srv)
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
