#!/bin/sh
# Instructions per request of each design, under valgrind's callgrind: the same count whatever
# else the machine is doing. Runs each design for 100k and 200k requests (one thread; each run
# does ops warm-up + ops timed) and divides the difference by the 200k requests between them.
# Usage: bench/metrics-cost/instructions.sh [path to the MetricsCost binary]
# valgrind 3.19 gives up on the debug info swiftc 6.3 writes, so it runs a stripped copy.
bin=$(mktemp)
strip -o "$bin" "${1:-/tmp/metrics-cost-build/release/MetricsCost}"
trap 'rm -f "$bin"' EXIT
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$2" 1 "$1" 1 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for d in loop clock aws sm-lookup sm-cached prom-lookup prom-cached; do
    a=$(count "$d" 100000)
    b=$(count "$d" 200000)
    echo "$d: $(( (b - a) / 200000 )) instructions/request"
done
