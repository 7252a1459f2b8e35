#!/bin/sh
# env.sh -- the smallest useful CGI program: it answers with the environment the server gave
# it, one NAME=value per line, sorted, as plain text.
#
#   curl 'http://localhost:8888/cgi/env.sh/extra/path?x=1'
#
# A CGI program writes a header block (here just Content-Type), a blank line, then the body,
# all on standard output. The server adds the status line, Date, Server and the framing.
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
env | LC_ALL=C sort
