"""The demo site (www/) in a real browser: aws serves a copy of www/ with the example plugins
(echo, upload, stream, math), CGI and a JSON access log, and headless Chromium, driven through
chromedriver by Selenium, uses every box of the page. After each interaction the DOM is read:

- the page's own assets arrive and decode (the stylesheet applies, the scripts run, and the
  browser's decoded sizes equal the files on disk, whatever Content-Encoding they came with);
- the server-sent-events counter advances;
- the echo plugin's reply appears;
- an uploaded file's bytes arrive on disk, with the progress bar at the full size;
- the audio element reaches readyState >= 3 ("can play") and the access log shows 206 answers
  for the file;
- the math plugin's C functions answer, and the CGI form's reply shows the fields as text;
- the browser's console has no error at the end.

The screenshot, the access log and the console log are kept in .build/browser-test/ (they
outlive the run's temporary folders). `make deps` installs chromium, chromium-driver and
selenium; without them this fails, it does not skip.
"""

import base64
import hashlib
import json
import os
import shutil

import pytest

import awstest
import pluginutil as pu

CONTRIB = os.path.join(awstest.REPO, "contrib")
WWW = os.path.join(awstest.REPO, "www")
KEEP = os.path.join(awstest.REPO, ".build", "browser-test")
WAIT = 30  # seconds for any one thing the page does; everything here takes well under one
UPLOAD_SIZE = 3 * awstest.MIB + 17


def _tools():
    missing = [t for t in ("chromium", "chromedriver") if shutil.which(t) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium")
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: this test drives headless Chromium "
                    "(`make deps` installs chromium, chromium-driver and selenium)", pytrace=False)


def _demo_root() -> str:
    """A copy of www/ (uploads land in the copy) with the generated audio file."""
    import importlib.util
    root = os.path.join(pu.new_dir("demo-"), "www")
    shutil.copytree(WWW, root, ignore=shutil.ignore_patterns("uploads", "demo.wav"))
    spec = importlib.util.spec_from_file_location("demo_audio", os.path.join(CONTRIB, "demo_audio.py"))
    demo_audio = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo_audio)
    demo_audio.write(os.path.join(root, "dynamic", "demo.wav"))
    return root


class Demo:
    def __init__(self, driver, srv, root, access_log):
        self.driver, self.srv, self.root, self.access_log = driver, srv, root, access_log

    def text(self, element_id: str) -> str:
        return self.driver.find_element("id", element_id).text

    def until(self, what: str, predicate):
        """Waits up to WAIT seconds for predicate(driver) to be truthy; fails naming `what`."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait
        try:
            return WebDriverWait(self.driver, WAIT, poll_frequency=0.1).until(predicate)
        except TimeoutException:
            pytest.fail(f"after {WAIT} s still not: {what}", pytrace=False)

    def submit(self, form_id: str) -> None:
        self.driver.find_element("css selector", f"#{form_id} button[type=submit]").click()

    def access_lines(self) -> list:
        with open(self.access_log, "rb") as f:
            return [json.loads(line) for line in f.read().splitlines()]


@pytest.fixture(scope="module")
def demo():
    _tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    root = _demo_root()
    folder = pu.plugin_folder({name: pu.example_plugin(name) for name in ("echo", "upload", "stream", "math")})
    log_dir = pu.new_dir("browser-log-")
    access_log = os.path.join(log_dir, "access.json")
    srv = awstest.Server(root, args=["--plugins", folder, "--access-log", access_log, "--log-format", "json"],
                         log_dir=log_dir, name="browser")
    with awstest.running(srv):
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        # --no-sandbox: the suite runs as root in a container, where Chromium's sandbox cannot start.
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=900,1200", "--mute-audio", "--no-first-run", "--disable-extensions"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=shutil.which("chromedriver"), log_output=os.path.join(log_dir, "chromedriver.log"))
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.set_page_load_timeout(WAIT)
            driver.set_script_timeout(WAIT)
            driver.get(f"http://{awstest.HOST}:{srv.port}/")
            yield Demo(driver, srv, root, access_log)
        finally:
            driver.quit()
        os.makedirs(KEEP, exist_ok=True)
        shutil.copyfile(access_log, os.path.join(KEEP, "access.json"))


def test_assets_arrive_decoded_and_run(demo):
    d = demo.driver
    demo.until("demo.js ran (html[data-demo-js])",
               lambda d: d.execute_script("return document.documentElement.dataset.demoJs") == "ran")
    demo.until("app.js fetched static/data.json", lambda d: "fetched static/data.json: aws" in demo.text("status"))
    # style.css applied: the cards have the border it gives them.
    assert d.execute_script("return getComputedStyle(document.querySelector('.card')).borderTopStyle") == "solid"
    # What the browser decoded is what is on disk, byte count for byte count (a compressed
    # transfer shows as encodedBodySize < decodedBodySize; either way the decoding must be exact).
    sizes = d.execute_script("""
        var out = {};
        performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))
          .forEach(function (e) { out[new URL(e.name).pathname] = [e.encodedBodySize, e.decodedBodySize]; });
        return out;""")
    for path, file in (("/", "index.html"), ("/static/style.css", "static/style.css"),
                       ("/static/demo.js", "static/demo.js"), ("/static/app.js", "static/app.js")):
        assert path in sizes, f"the browser did not fetch {path}: {sorted(sizes)}"
        encoded, decoded = sizes[path]
        assert decoded == os.path.getsize(os.path.join(demo.root, file)), (path, sizes[path])
        assert 0 < encoded <= decoded, (path, sizes[path])
        # Text files over 1 KiB are compressed on the fly (small ones on the loop, at the first
        # request): the browser got fewer bytes than it decoded.
        if decoded > 1024:
            assert encoded < decoded, f"{path} was not sent compressed: {sizes[path]}"
    # A text fetched with the browser's Accept-Encoding decodes to the file's exact text.
    got = d.execute_async_script("""
        var done = arguments[arguments.length - 1];
        fetch('static/hello.txt').then(function (r) { return r.text(); }).then(done, function (e) { done('error ' + e); });""")
    assert got == awstest.read_text(os.path.join(demo.root, "static", "hello.txt"))


def test_server_sent_events_advance_the_counter(demo):
    demo.until("the first server-sent event arrived", lambda d: int(demo.text("sse-count")) >= 1)
    first = int(demo.text("sse-count"))
    demo.until(f"the counter advanced past {first}", lambda d: int(demo.text("sse-count")) >= first + 2)
    assert demo.text("sse-last").startswith('(last: "event ')


def test_echo_reply_appears(demo):
    box = demo.driver.find_element("id", "echo-text")
    box.clear()
    message = "héllo <b>aws</b> & echo"
    box.send_keys(message)
    demo.submit("echo-form")
    demo.until("the echo reply appeared", lambda d: demo.text("echo-reply") == message)
    # Shown as text: the echoed markup made no element.
    assert demo.driver.find_elements("css selector", "#echo-reply b") == []


def test_upload_bytes_arrive_on_disk(demo, tmp_path):
    data = os.urandom(UPLOAD_SIZE)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    demo.driver.find_element("id", "upload-file").send_keys(str(path))
    demo.submit("upload-form")
    result = demo.driver.find_element("id", "upload-result")
    demo.until("the upload finished", lambda d: result.get_attribute("data-size") or "failed" in result.text)
    assert result.get_attribute("data-size") == str(UPLOAD_SIZE), result.text
    name = result.get_attribute("data-name")
    with open(os.path.join(demo.root, "uploads", name), "rb") as f:
        stored = f.read()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest() and len(stored) == UPLOAD_SIZE
    bar = demo.driver.find_element("id", "upload-progress")
    assert bar.get_attribute("data-loaded") == str(UPLOAD_SIZE) == bar.get_attribute("max")
    link = demo.driver.find_element("css selector", "#upload-result a")
    assert link.get_attribute("href").endswith(f"/uploads/{name}")


def test_audio_can_play_through_range_requests(demo):
    demo.until("the audio element reached readyState >= 3 (can play)",
               lambda d: d.execute_script("return document.getElementById('player').readyState") >= 3)
    assert "can play" in demo.text("media-state")
    size = os.path.getsize(os.path.join(demo.root, "dynamic", "demo.wav"))
    duration = demo.driver.execute_script("return document.getElementById('player').duration")
    assert abs(duration - 90.0) < 0.5, duration
    wav = [o for o in demo.access_lines() if o["target"] == "/dynamic/demo.wav" and o["method"] == "GET"]
    assert wav, "no GET of /dynamic/demo.wav in the access log"
    # Chromium asks for media with Range (bytes=0- first): every answer is a part of the file.
    assert all(o["status"] == 206 and 0 < o["bytes"] <= size for o in wav), [(o["status"], o["bytes"]) for o in wav]


def test_math_functions_answer(demo):
    d = demo.driver
    for element_id, value in (("math-w", "6"), ("math-h", "7"), ("math-n", "20")):
        box = d.find_element("id", element_id)
        box.clear()
        box.send_keys(value)
    demo.submit("math-form")
    demo.until("the math results appeared",
               lambda d: "…" not in demo.text("math-area") + demo.text("math-add") + demo.text("math-fib"))
    assert (demo.text("math-area"), demo.text("math-add"), demo.text("math-fib")) == ("42", "13", "6765")


def test_cgi_form_reply_shows_the_fields_as_text(demo):
    d = demo.driver
    name = d.find_element("id", "cgi-name")
    name.clear()
    name.send_keys("<i>Ada</i> & Grace")
    demo.submit("cgi-form")
    demo.until("the CGI reply appeared", lambda d: "fields: 2" in demo.text("cgi-reply"))
    reply = demo.text("cgi-reply")
    assert "name = <i>Ada</i> & Grace" in reply and "age = 36" in reply, reply
    assert "content-type: application/x-www-form-urlencoded" in reply, reply
    assert d.find_elements("css selector", "#cgi-reply i") == []


def test_no_console_errors_and_a_screenshot(demo):
    d = demo.driver
    # Every box used above has answered by now (this test runs last; alone, it shows the page as loaded).
    demo.until("the audio element reached readyState >= 3",
               lambda d: d.execute_script("return document.getElementById('player').readyState") >= 3)
    os.makedirs(KEEP, exist_ok=True)
    shot = os.path.join(KEEP, "demo.png")
    # The whole page, not just the window (DevTools: the layout's size, captured beyond the viewport).
    size = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    png = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
        "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})["data"]
    with open(shot, "wb") as f:
        f.write(base64.b64decode(png))
    logs = d.get_log("browser")
    with open(os.path.join(KEEP, "console.json"), "w") as f:
        json.dump(logs, f, indent=1)
    errors = [e for e in logs if e["level"] == "SEVERE"]
    assert errors == [], f"console errors (all kept in {KEEP}/console.json): {errors}"
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")
