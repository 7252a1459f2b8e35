#!/bin/sh
# slow.sh -- a CGI program that streams: 20 lines, one every 100 ms, with no Content-Length.
# The server passes each line on as it is written (chunked on HTTP/1.1), so a client sees
# them arrive one by one:
#
#   curl -N http://localhost:8888/cgi/slow.sh
#
# (`sleep 0.1` needs a sleep that takes fractions of a second: GNU coreutils, busybox, BSD.)
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
i=1
while [ "$i" -le 20 ]; do
    [ "$i" -gt 1 ] && sleep 0.1
    printf 'line %d of 20\n' "$i"
    i=$((i + 1))
done
