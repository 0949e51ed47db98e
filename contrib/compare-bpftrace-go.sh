#!/usr/bin/env bash
# sonde beside bpftrace (Debian's 0.17: apt-get install bpftrace) on one Go
# program, the test fixture gofx.go (Go 1.19): 4 goroutines each nap(2) then
# grow(2000) (recursing, so their stacks are copied), then greet(name, n) x3.
# Run as root after `cargo build -p sonde-cli && cargo test -p sonde-tests --no-run`.
# The fixtures are copied first: uprobes belong to an inode, so nothing here
# touches a test run using the originals.
cd "$(dirname "$0")/.."
F=$(ls -td "$PWD"/target/debug/build/sonde-tests-*/out/fixtures | head -1)
S=$PWD/target/debug/sonde
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cp "$F/fixture-go" "$F/fixture-go-stripped" "$W/"
G=$W/fixture-go
GS=$W/fixture-go-stripped
job() { echo; echo "=== $1"; }
# The traced program's fate: its result line (the sum, 4024) or how it died;
# the tracer's own exit status first.
verdict() { echo "--- tracer exit $1; the traced program: $(grep -a -m1 -E '^[0-9]+$|fatal error|SIGILL|SIGSEGV|panic:' "$2" || echo 'no result line')"; }

job "1. count main.grow by name, stripped binary (-ldflags=-s -w)"
echo '$ sonde count fixture-go-stripped main.grow'
echo go | $S count "$GS" main.grow -- "$GS" > "$W/o" 2>&1; verdict $? "$W/o"; grep -a "main.grow" "$W/o"
echo '$ bpftrace -e uprobe:fixture-go-stripped:main.grow { @ = count(); }'
echo go | bpftrace -e "uprobe:$GS:main.grow { @ = count(); }" -c "$GS" > "$W/o" 2>&1; verdict $? "$W/o"; grep -a -v "^$" "$W/o" | head -3

job "2. Go string argument: main.greet(name string, n int)"
echo '$ sonde trace --args gs,i fixture-go-stripped main.greet'
echo go | $S trace --args gs,i "$GS" main.greet -- "$GS" > "$W/o" 2>&1; verdict $? "$W/o"; grep -a "greet(" "$W/o"
echo '$ bpftrace -e uprobe:fixture-go:main.greet { printf("%r %d\n", buf(reg("ax"), reg("bx")), reg("cx")); }'
echo go | bpftrace -e "uprobe:$G:main.greet { printf(\"%r %d\\n\", buf(reg(\"ax\"), reg(\"bx\")), reg(\"cx\")); }" -c "$G" > "$W/o" 2>&1; verdict $? "$W/o"; grep -a -v "^Attaching\|^$" "$W/o" | head -4

job "3. latency of main.grow (stacks copied while timed)"
echo '$ sonde latency fixture-go-stripped main.grow'
echo go | $S latency "$GS" main.grow -- "$GS" > "$W/o" 2>&1; verdict $? "$W/o"; grep -a -A2 "main.grow\|returns" "$W/o" | head -6
echo '$ bpftrace -e uprobe:main.grow { @s[tid] = nsecs; } uretprobe:main.grow { @n = count(); }'
echo go | bpftrace -e "uprobe:$G:main.grow { @s[tid] = nsecs; } uretprobe:$G:main.grow /@s[tid]/ { @n = count(); delete(@s[tid]); }" -c "$G" > "$W/o" 2>&1; verdict $? "$W/o"; grep -a -m3 "WARNING\|^@n\|unexpected return pc" "$W/o"; echo "(\"unexpected return pc\" lines: $(grep -ac "unexpected return pc" "$W/o"))"

job "4. latency of main.nap (parked, resumed on another thread)"
echo '$ sonde latency fixture-go-stripped main.nap'
echo go | $S latency "$GS" main.nap -- "$GS" > "$W/o" 2>&1; verdict $? "$W/o"; grep -a -A3 "main.nap" "$W/o" | head -5
echo '$ bpftrace -e uprobe:main.nap { @s[tid] = nsecs; } uretprobe:main.nap /@s[tid]/ { @us = stats(...); }'
echo go | bpftrace -e "uprobe:$G:main.nap { @s[tid] = nsecs; @calls = count(); } uretprobe:$G:main.nap /@s[tid]/ { @us = stats((nsecs - @s[tid]) / 1000); delete(@s[tid]); }" -c "$G" > "$W/o" 2>&1; verdict $? "$W/o"; grep -a -m4 "WARNING\|^@calls\|^@us\|unexpected return pc" "$W/o"
