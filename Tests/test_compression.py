"""Compression: precompressed FILE.br / FILE.zst / FILE.gz chosen by Accept-Encoding (q-values,
Vary, ranges and 304 on the compressed representation), and on-the-fly compression of text files
(every coding decompresses to the original bytes; a large file is compressed off the loop; never
for images or ranges)."""

import gzip
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import brotli
import pytest
import zstandard

from awstest import HOST, connect, get, read_response, sha256, wait_for

WORDS = ["alpha", "beta", "gamma", "delta", "server", "client", "request", "response",
         "<div class=\"x\">", "</div>", "\n", "function", "return", "{", "}", "const"]


def text(seed: str, size: int) -> bytes:
    """Compressible text of `size` bytes, distinct per seed."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.choice(WORDS).encode() + b" "
    return bytes(out[:size])


def decode(coding, body: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "br":
        return brotli.decompress(body)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    assert coding is None, coding
    return body


def compressors():
    return {"br": lambda d: brotli.compress(d, quality=11),
            "zstd": lambda d: zstandard.ZstdCompressor(level=19).compress(d),
            "gzip": lambda d: gzip.compress(d, 9, mtime=0)}


@pytest.fixture
def root():
    base = tempfile.mkdtemp(prefix="aws-compress-")
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def write(root, name, data: bytes, mtime=None):
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return data


def with_variants(root, name, data: bytes, codings=("br", "zstd", "gzip")):
    """FILE and its precompressed variants (made at the highest levels, so their bytes differ from
    what the server would make on the fly); returns {coding: variant bytes}."""
    write(root, name, data)
    now = time.time()
    os.utime(os.path.join(root, name), (now - 10, now - 10))
    suffix = {"br": ".br", "zstd": ".zst", "gzip": ".gz"}
    made = {}
    for coding in codings:
        made[coding] = write(root, name + suffix[coding], compressors()[coding](data), mtime=now - 5)
    return made


def encoded(r):
    return r if r.header("content-encoding") else None


def ae(value):
    return f"Accept-Encoding: {value}\r\n" if value is not None else ""


# --- precompressed ----------------------------------------------------------------------------

@pytest.mark.parametrize("accept,want", [
    ("br", "br"),
    ("gzip, deflate, br, zstd", "br"),
    ("gzip;q=1, br;q=0.5, zstd;q=0.8", "gzip"),
    ("br;q=0, zstd", "zstd"),
    ("*;q=0.1, gzip;q=0", "br"),
    ("zstd;q=0.2, gzip;q=0.3, identity;q=0.1", "gzip"),
    ("gzip;q=0.3, identity", None),
    ("deflate", None),
    (None, None),
])
def test_precompressed_variant_by_accept_encoding(make_server, root, accept, want):
    data = text("page", 20000)
    variants = with_variants(root, "page.html", data)
    srv = make_server(["--no-compress"], root=root)
    r = get(srv.port, "/page.html", extra=ae(accept))
    assert r.status == 200, r
    assert r.header("content-encoding") == want, r.headers
    assert r.header("vary") == "Accept-Encoding", r.headers
    assert r.media_type == "text/html"
    assert r.body == (variants[want] if want else data), "not the variant file's bytes"
    assert r.content_length == len(r.body)
    assert decode(want, r.body) == data


def test_precompressed_variants_have_their_own_etags(make_server, root):
    with_variants(root, "app.js", text("app", 9000))
    srv = make_server(["--no-compress"], root=root)
    tags = {get(srv.port, "/app.js", extra=ae(c)).header("etag") for c in ("br", "zstd", "gzip", None)}
    assert len(tags) == 4, tags


def test_precompressed_preferred_to_on_the_fly_at_equal_weight(make_server, root):
    data = text("pre", 30000)
    variants = with_variants(root, "pre.css", data, codings=("gzip",))
    srv = make_server(["--workers", "1"], root=root)
    r = get(srv.port, "/pre.css", extra=ae("gzip, br"))
    assert (r.header("content-encoding"), r.body) == ("gzip", variants["gzip"])
    # A higher weight for a coding that only compression on the fly has wins over the variant
    # (identity until the compression thread has made it).
    r = wait_for(lambda: encoded(get(srv.port, "/pre.css", extra=ae("gzip;q=0.5, br"))), timeout=30)
    assert r and r.header("content-encoding") == "br"
    assert brotli.decompress(r.body) == data


def test_range_of_the_precompressed_representation(make_server, root):
    variants = with_variants(root, "big.txt", text("big", 100000))
    srv = make_server(["--no-compress"], root=root)
    br = variants["br"]
    r = get(srv.port, "/big.txt", extra=ae("br") + "Range: bytes=10-49\r\n")
    assert r.status == 206, r
    assert r.header("content-encoding") == "br"
    assert r.header("vary") == "Accept-Encoding"
    assert r.header("content-range") == f"bytes 10-49/{len(br)}"
    assert r.body == br[10:50]
    # If-Range with the compressed representation's tag keeps the range.
    tag = get(srv.port, "/big.txt", extra=ae("br")).header("etag")
    r = get(srv.port, "/big.txt", extra=ae("br") + f"Range: bytes=-5\r\nIf-Range: {tag}\r\n")
    assert (r.status, r.body) == (206, br[-5:])


def test_not_modified_with_the_compressed_etag(make_server, root):
    variants = with_variants(root, "doc.txt", text("doc", 8000))
    srv = make_server(["--no-compress"], root=root)
    tag = get(srv.port, "/doc.txt", extra=ae("zstd")).header("etag")
    r = get(srv.port, "/doc.txt", extra=ae("zstd") + f"If-None-Match: {tag}\r\n")
    assert r.status == 304, r
    assert r.header("etag") == tag
    assert r.header("vary") == "Accept-Encoding"
    # The same tag does not match another representation.
    r = get(srv.port, "/doc.txt", extra=ae("gzip") + f"If-None-Match: {tag}\r\n")
    assert (r.status, r.header("content-encoding"), r.body) == (200, "gzip", variants["gzip"])


def test_head_matches_get_for_a_variant(make_server, root):
    with_variants(root, "h.txt", text("h", 5000))
    srv = make_server(["--no-compress"], root=root)
    g = get(srv.port, "/h.txt", extra=ae("br"))
    h = get(srv.port, "/h.txt", method="HEAD", extra=ae("br"))
    for name in ("content-encoding", "content-length", "etag", "vary", "content-type"):
        assert h.header(name) == g.header(name), name


def test_older_variant_is_ignored(make_server, root):
    data = text("stale", 6000)
    write(root, "s.txt", data)
    write(root, "s.txt.gz", gzip.compress(b"an earlier version"), mtime=time.time() - 100)
    srv = make_server(["--no-compress"], root=root)
    r = get(srv.port, "/s.txt", extra=ae("gzip"))
    assert (r.header("content-encoding"), r.body) == (None, data)


def test_dynamic_files_use_variants_but_are_not_compressed_on_the_fly(make_server, root):
    plain = write(root, "dynamic/plain.txt", text("dyn", 9000))
    variants = with_variants(root, "dynamic/v.txt", text("dynv", 9000), codings=("gzip",))
    srv = make_server(root=root)
    r = get(srv.port, "/dynamic/plain.txt", extra=ae("gzip, br"))
    assert (r.header("content-encoding"), r.body) == (None, plain)
    r = get(srv.port, "/dynamic/v.txt", extra=ae("gzip, br"))
    assert (r.header("content-encoding"), r.body) == ("gzip", variants["gzip"])


def test_variant_of_a_directory_index(make_server, root):
    data = text("index", 3000)
    variants = with_variants(root, "docs/index.html", data, codings=("br",))
    srv = make_server(["--no-compress"], root=root)
    r = get(srv.port, "/docs/", extra=ae("br"))
    assert (r.status, r.header("content-encoding"), r.body) == (200, "br", variants["br"])


# --- on the fly -------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [5000, 300_000], ids=["inline", "on-thread"])
@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
def test_on_the_fly_decompresses_to_the_original(make_server, root, coding, size):
    data = write(root, "t.js", text(f"fly{size}", size))
    # One worker: each worker keeps (and makes) its own compressed bodies.
    srv = make_server(["--workers", "1"], root=root)

    def compressed():
        r = get(srv.port, "/t.js", extra=ae(coding))
        assert r.status == 200 and r.header("vary") == "Accept-Encoding", r
        return r if r.header("content-encoding") else None

    # A large file is compressed on the compression thread: identity until it is ready.
    r = wait_for(compressed, timeout=30)
    assert r, "never compressed"
    assert r.header("content-encoding") == coding
    assert r.content_length == len(r.body) < size
    assert sha256(decode(coding, r.body)) == sha256(data)
    assert r.header("etag").endswith(f'-{coding}"')
    h = get(srv.port, "/t.js", method="HEAD", extra=ae(coding))
    assert (h.header("content-length"), h.header("content-encoding")) == (str(len(r.body)), coding)
    again = get(srv.port, "/t.js", extra=ae(coding) + f"If-None-Match: {r.header('etag')}\r\n")
    assert (again.status, again.header("etag")) == (304, r.header("etag"))


def test_curl_compressed(make_server, root):
    data = write(root, "c.css", text("curl", 40000))
    srv = make_server(["--workers", "1"], root=root)
    url = f"http://{HOST}:{srv.port}/c.css"
    for _ in range(50):  # until the compression thread's body is in the cache
        head = subprocess.run(["curl", "-sS", "--compressed", "-D", "-", "-o", os.devnull, url],
                              capture_output=True, text=True, check=True).stdout.lower()
        if "content-encoding" in head:
            break
        time.sleep(0.1)
    assert "content-encoding: br" in head, head
    out = subprocess.run(["curl", "-sS", "--compressed", url], capture_output=True, check=True).stdout
    assert out == data


def test_never_for_images_small_files_or_ranges(make_server, root):
    png = write(root, "i.png", random.Random(1).randbytes(8000))
    small = write(root, "small.txt", b"tiny " * 50)
    data = write(root, "r.txt", text("ranged", 8000))
    srv = make_server(root=root)
    r = get(srv.port, "/i.png", extra=ae("gzip, br, zstd"))
    assert (r.header("content-encoding"), r.header("vary"), r.body) == (None, None, png)
    r = get(srv.port, "/small.txt", extra=ae("gzip, br, zstd"))
    assert (r.header("content-encoding"), r.body) == (None, small)
    r = get(srv.port, "/r.txt", extra=ae("gzip, br, zstd") + "Range: bytes=100-199\r\n")
    assert (r.status, r.header("content-encoding"), r.body) == (206, None, data[100:200])
    assert r.header("content-range") == f"bytes 100-199/{len(data)}"


def test_no_compress_flag(make_server, root):
    data = write(root, "n.txt", text("off", 8000))
    srv = make_server(["--no-compress"], root=root)
    r = get(srv.port, "/n.txt", extra=ae("gzip, br, zstd"))
    assert (r.header("content-encoding"), r.header("vary"), r.body) == (None, None, data)


def test_large_file_does_not_stall_other_clients(make_server, root):
    """A 24 MiB text file asked for in br at a slow level: the compression runs on its own thread,
    so a probe on another connection is answered at once all the while."""
    data = write(root, "huge.txt", text("huge", 24 * 1024 * 1024))
    write(root, "probe.txt", b"probe\n")
    srv = make_server(["--workers", "1", "--compress-level-br", "9", "--compress-cache", "128"], root=root)
    big = connect(srv.port, timeout=60)
    big.sendall(b"GET /huge.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n\r\n")
    first = {}
    reader = threading.Thread(target=lambda: first.update(r=read_response(big, timeout=60)))
    reader.start()
    slowest = 0.0
    probes = 0
    deadline = time.monotonic() + 60
    compressed = None
    while time.monotonic() < deadline:
        start = time.monotonic()
        p = get(srv.port, "/probe.txt", timeout=5)
        slowest = max(slowest, time.monotonic() - start)
        probes += 1
        assert p.status == 200 and p.body == b"probe\n"
        h = get(srv.port, "/huge.txt", method="HEAD", extra=ae("br"), timeout=5)
        if h.header("content-encoding") == "br":
            compressed = h
            break
        time.sleep(0.02)
    reader.join()
    big.close()
    assert first["r"].status == 200 and first["r"].body == data, "the first answer is the identity body"
    assert compressed is not None, "never compressed"
    assert slowest < 0.5, f"a probe waited {slowest:.3f}s while the file was compressed ({probes} probes)"
    r = get(srv.port, "/huge.txt", extra=ae("br"), timeout=60)
    assert r.header("content-encoding") == "br"
    assert sha256(brotli.decompress(r.body)) == sha256(data)


# --- plugin responses compressed as they stream (ABI 1.3 compress_response) ------------------

def plugin_text(parts: int, size: int) -> list:
    """The parts Tests/plugins/compress.c sends."""
    out = []
    for k in range(parts):
        buf = bytearray()
        while len(buf) < size:
            line = f"line {k * 1000 + len(buf)}: the quick brown fox jumps over the lazy dog\n".encode()
            buf += line[:size - len(buf)]
        out.append(bytes(buf))
    return out


def raw_chunks(data: bytes):
    """(head text, [chunk payloads]) of a chunked response read to EOF."""
    head, _, rest = data.partition(b"\r\n\r\n")
    chunks = []
    while True:
        line, _, rest = rest.partition(b"\r\n")
        n = int(line.split(b";")[0], 16)
        if n == 0:
            assert rest == b"\r\n", rest[:50]
            return head.decode("latin-1"), chunks
        chunks.append(rest[:n])
        assert rest[n:n + 2] == b"\r\n"
        rest = rest[n + 2:]


def header_of(head: str, name: str):
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name:
            return v.strip()
    return None


def streaming_decoder(coding):
    if coding == "gzip":
        import zlib
        return zlib.decompressobj(16 + 15).decompress
    if coding == "br":
        return brotli.Decompressor().process
    return zstandard.ZstdDecompressor().decompressobj().decompress


@pytest.fixture(scope="module")
def plugin_server():
    import pluginutil as pu
    folder = pu.plugin_folder({"compress": pu.test_plugin("compress")})
    with pu.running_server(folder) as srv:
        yield srv


def plugin_get(srv, target, accept=None, method="GET", version="1.1"):
    from awstest import raw_request
    req = f"{method} {target} HTTP/{version}\r\nHost: x\r\n{ae(accept)}Connection: close\r\n\r\n"
    return raw_request(srv.port, req.encode())


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
def test_plugin_stream_compressed_part_by_part(plugin_server, coding):
    parts = plugin_text(4, 30000)
    head, chunks = raw_chunks(plugin_get(plugin_server, "/compress/stream?parts=4&size=30000", coding))
    assert head.startswith("HTTP/1.1 200"), head
    assert header_of(head, "content-encoding") == coding
    assert header_of(head, "vary") == "Accept-Encoding"
    assert header_of(head, "x-compress") == "1"
    assert header_of(head, "content-length") is None
    # One chunk per part, each flushed: it decompresses to exactly that part; then the end.
    assert len(chunks) == 5, [len(c) for c in chunks]
    feed = streaming_decoder(coding)
    for part, chunk in zip(parts, chunks):
        assert feed(chunk) == part
    assert feed(chunks[4]) == b""
    assert sum(map(len, chunks)) < sum(map(len, parts)) / 3
    whole = b"".join(chunks)
    assert sha256(decode(coding, whole)) == sha256(b"".join(parts))


def test_plugin_stream_identity_when_not_accepted(plugin_server):
    parts = plugin_text(2, 5000)
    for accept in (None, "deflate", "br;q=0, gzip;q=0, zstd;q=0"):
        head, chunks = raw_chunks(plugin_get(plugin_server, "/compress/stream?parts=2&size=5000", accept))
        assert header_of(head, "x-compress") == "0"
        assert header_of(head, "content-encoding") is None
        assert header_of(head, "vary") == "Accept-Encoding"
        assert b"".join(chunks) == b"".join(parts)


def test_plugin_stream_length_file_part_head_and_http10(plugin_server):
    # set_content_length after compress_response is refused: the length is unknown.
    head, chunks = raw_chunks(plugin_get(plugin_server, "/compress/stream?parts=1&size=100&length=1", "gzip"))
    assert (header_of(head, "x-length"), header_of(head, "content-encoding")) == ("-2", "gzip")
    assert gzip.decompress(b"".join(chunks)) == plugin_text(1, 100)[0]
    # A FILE part is refused while compressing (AWS_E_STATE); memory parts go on.
    head, chunks = raw_chunks(plugin_get(plugin_server, "/compress/file", "zstd"))
    assert header_of(head, "x-file-part") == "-2"
    assert decode("zstd", b"".join(chunks)) == b"fallback\n"
    # HEAD: the same head, no body.
    data = plugin_get(plugin_server, "/compress/stream?parts=2&size=5000", "br", method="HEAD")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Encoding: br" in head and body == b""
    # HTTP/1.0: no chunking, the close ends the compressed body.
    data = plugin_get(plugin_server, "/compress/stream?parts=3&size=20000", "br", version="1.0")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Encoding: br" in head and b"Transfer-Encoding" not in head
    assert brotli.decompress(body) == b"".join(plugin_text(3, 20000))
    # 204: no body, so no Content-Encoding.
    data = plugin_get(plugin_server, "/compress/stream?parts=1&size=100&status=204", "br")
    assert data.startswith(b"HTTP/1.1 204") and b"Content-Encoding" not in data


def test_plugin_stream_not_compressed_with_no_compress():
    import pluginutil as pu
    folder = pu.plugin_folder({"compress": pu.test_plugin("compress")})
    with pu.running_server(folder, extra=["--no-compress"]) as srv:
        head, chunks = raw_chunks(plugin_get(srv, "/compress/stream?parts=2&size=3000", "br"))
        assert (header_of(head, "x-compress"), header_of(head, "content-encoding")) == ("0", None)
        assert b"".join(chunks) == b"".join(plugin_text(2, 3000))


@pytest.mark.parametrize("flag,value,message", [
    ("--compress-level-gzip", "0", "--compress-level-gzip must be between 1 and 9"),
    ("--compress-level-br", "12", "--compress-level-br must be between 0 and 11"),
    ("--compress-level-zstd", "20", "--compress-level-zstd must be between 1 and 19"),
    ("--compress-cache", "0", "--compress-cache must be between 1 and 65536 MiB"),
])
def test_bad_compression_flags_are_refused(root, flag, value, message):
    from awstest import aws_bin
    r = subprocess.run([aws_bin(), "--root", root, "--port", "1", flag, value], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_compressed_and_variant_responses_keep_cache_control(make_server, root):
    write(root, "app.css", text("cc", 6000))
    with_variants(root, "lib.js", text("cclib", 6000), codings=("gzip",))
    srv = make_server(["--cache-control", "*.css=max-age=60", "--cache-control", "*.js=max-age=90",
                       "--no-immutable"], root=root)
    r = get(srv.port, "/app.css", extra=ae("br"))
    assert (r.header("content-encoding"), r.header("cache-control")) == ("br", "max-age=60"), r.headers
    r304 = get(srv.port, "/app.css", extra=ae("br") + f"If-None-Match: {r.header('etag')}\r\n")
    assert (r304.status, r304.header("cache-control"), r304.header("vary")) == (304, "max-age=60", "Accept-Encoding")
    r = get(srv.port, "/lib.js", extra=ae("gzip"))
    assert (r.header("content-encoding"), r.header("cache-control")) == ("gzip", "max-age=90"), r.headers


def test_plugin_compress_response_after_a_part_is_refused(plugin_server):
    """A part already queued would go out uncompressed under Content-Encoding: the call is a
    misuse (AWS_E_STATE) and the host answers 500 instead of a corrupt body."""
    raw = plugin_get(plugin_server, "/compress/late", "gzip")
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 500"), head
    assert header_of(head, "content-encoding") is None, head
    assert b"sent before compress_response" not in raw
    from awstest import wait_for
    assert wait_for(lambda: "compress_response after send_part: AWS_E_STATE" in plugin_server.stderr(), 5), plugin_server.stderr()[-2000:]
    assert "misuse: compress_response after send_part" in plugin_server.stderr()


def test_failed_preconditions_and_unsatisfiable_ranges_say_vary(make_server, root):
    """The 412 and the 416 of a negotiated file depend on Accept-Encoding (each representation
    has its own ETag and length), so they carry Vary, as its 200 and 304 do; a file with nothing
    to negotiate has no Vary on them."""
    with_variants(root, "v.txt", text("v", 6000))
    write(root, "plain.bin", b"x" * 3000)
    srv = make_server(["--no-compress"], root=root)
    r = get(srv.port, "/v.txt", extra=ae("br") + 'If-Match: "nope"\r\n')
    assert (r.status, r.header("vary")) == (412, "Accept-Encoding"), r
    r = get(srv.port, "/v.txt", extra=ae("br") + "Range: bytes=999999-\r\n")
    assert (r.status, r.header("vary")) == (416, "Accept-Encoding"), r
    r = get(srv.port, "/plain.bin", extra='If-Match: "nope"\r\n')
    assert (r.status, r.header("vary")) == (412, None), r
    r = get(srv.port, "/plain.bin", extra="Range: bytes=999999-\r\n")
    assert (r.status, r.header("vary")) == (416, None), r
    # A body compressed on the fly (no variant file) is negotiated too.
    write(root, "fly.txt", text("fly", 5000))
    srv = make_server([], root=root)
    r = get(srv.port, "/fly.txt", extra=ae("gzip") + 'If-Match: "nope"\r\n')
    assert (r.status, r.header("vary")) == (412, "Accept-Encoding"), r
