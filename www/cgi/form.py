#!/usr/bin/env python3
"""form.py -- a CGI program in Python that handles a form.

GET (or HEAD) answers a small HTML form that posts back to this program.
POST reads the request body (CONTENT_LENGTH bytes on standard input) and answers a plain-text
summary: the fields of an application/x-www-form-urlencoded body, or just the size of any
other body. Other methods get 405.

    curl -d 'name=x&age=3' http://localhost:8888/cgi/form.py
"""

import html
import os
import sys
from urllib.parse import parse_qsl


def answer(content_type, text, extra=""):
    """A CGI answer: header lines, a blank line, the body (all on standard output)."""
    head = f"{extra}Content-Type: {content_type}\r\n\r\n"
    sys.stdout.buffer.write(head.encode() + text.encode("utf-8"))
    sys.stdout.flush()


method = os.environ.get("REQUEST_METHOD", "GET")

if method in ("GET", "HEAD"):
    action = html.escape(os.environ.get("SCRIPT_NAME", ""), quote=True)
    answer("text/html; charset=utf-8", f"""<!doctype html>
<title>form.py</title>
<form method="post" action="{action}">
  <label>name <input name="name"></label>
  <label>age <input name="age" type="number"></label>
  <button>send</button>
</form>
""")
elif method == "POST":
    length = int(os.environ.get("CONTENT_LENGTH") or 0)
    body = sys.stdin.buffer.read(length)
    content_type = os.environ.get("CONTENT_TYPE", "")
    lines = ["method: POST", f"content-type: {content_type or '(none)'}", f"bytes: {len(body)}"]
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        fields = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        lines.append(f"fields: {len(fields)}")
        lines += [f"{name} = {value}" for name, value in fields]
    else:
        lines.append("raw body (not a form)")
    answer("text/plain; charset=utf-8", "\n".join(lines) + "\n")
else:
    # Status: sets the response status; Allow passes through to the client.
    answer("text/plain; charset=utf-8", f"{method} is not supported here\n",
           extra="Status: 405 Method Not Allowed\r\nAllow: GET, HEAD, POST\r\n")
