#!/usr/bin/env bash
# sonde beside bpftrace (Debian's 0.17: apt-get install bpftrace) on the jobs
# whose data #25 changed, the same fixtures one after the other. As root, after
# `cargo build -p sonde-cli && cargo test -p sonde-tests --no-run` (the fixtures).
cd "$(dirname "$0")/.."
F=$(ls -td "$PWD"/target/debug/build/sonde-tests-*/out/fixtures | head -1)
S=$PWD/target/debug/sonde
job() { echo; echo "=== $1"; }
job "1. read(2) buffer at return: cat /etc/hostname"
echo '$ sonde trace --args i,b:ret,u --ret l libc read -- cat /etc/hostname'
$S trace --args i,b:ret,u --ret l libc read -- cat /etc/hostname 2>&1 | grep -v "^sonde: tracing" | head -6
echo '$ bpftrace -e uprobe read {@p[tid]=arg1} uretprobe read /@p[tid]/ {printf(buf(@p[tid], retval))} -c cat /etc/hostname'
bpftrace -e 'uprobe:/lib/x86_64-linux-gnu/libc.so.6:read /comm == "cat"/ { @p[tid] = arg1; } uretprobe:/lib/x86_64-linux-gnu/libc.so.6:read /@p[tid]/ { printf("read() = %d %r\n", retval, buf(@p[tid], retval)); delete(@p[tid]); }' -c "/bin/cat /etc/hostname" 2>&1 | grep -v "^Attaching\|^@p\|^$" | head -6
job "2. four strings per call"
echo '$ sonde trace --args s,s,s,s --max-bytes 16 fixture-pie txt_four -- fixture-pie four'
echo go | $S trace --args s,s,s,s --max-bytes 16 $F/fixture-pie txt_four -- $F/fixture-pie four 2>&1 | grep "txt_four("
echo "\$ bpftrace -e 'uprobe:fixture-pie:txt_four { printf(str(arg0..arg3)) }'  (BPFTRACE_STRLEN=16)"
echo go | BPFTRACE_STRLEN=16 bpftrace -e "uprobe:$F/fixture-pie:txt_four { printf(\"%s %s %s %s\\n\", str(arg0), str(arg1), str(arg2), str(arg3)); }" -c "$F/fixture-pie four" 2>&1 | grep -v "^Attaching\|^$\|^1010"
job "3. a string on a page not yet touched"
echo '$ sonde trace --args s,i fixture-pie str_echo -- fixture-pie fresh'
echo go | $S trace --args s,i $F/fixture-pie str_echo -- $F/fixture-pie fresh 2>&1 | grep "str_echo("
echo "\$ bpftrace -e 'uprobe:fixture-pie:str_echo { printf(str(arg0)) }'"
echo go | bpftrace -e "uprobe:$F/fixture-pie:str_echo { printf(\"str_echo(\\\"%s\\\", %d)\\n\", str(arg0), arg1); }" -c "$F/fixture-pie fresh" 2>&1 | grep "str_echo("
job "6. composite and string keys: strings per (comm, arg0)"
echo '$ sonde count --by comm,arg0:s fixture-pie str_echo -- fixture-pie strings'
echo go | $S count --by comm,arg0:s $F/fixture-pie str_echo -- $F/fixture-pie strings 2>&1 | grep -v "^sonde: counting\|^314"
echo "\$ bpftrace -e 'uprobe:fixture-pie:str_echo { @[comm, str(arg0)] = count(); }'"
echo go | bpftrace -e "uprobe:$F/fixture-pie:str_echo { @[comm, str(arg0)] = count(); }" -c "$F/fixture-pie strings" 2>&1 | grep -a "^@"
job "6b. by return value"
echo '$ sonde count --by ret fixture-pie fx_delta -- fixture-pie'
echo go | $S count --by ret $F/fixture-pie fx_delta -- $F/fixture-pie 2>&1 | grep -v "^sonde: counting\|^577"
echo "\$ bpftrace -e 'uretprobe:fixture-pie:fx_delta { @[retval] = count(); }'"
echo go | bpftrace -e "uretprobe:$F/fixture-pie:fx_delta { @[retval] = count(); }" -c "$F/fixture-pie" 2>&1 | grep -a "^@"
job "7. stacks at a function's entry"
echo '$ sonde count --by stack fixture-stack stack_leaf -- fixture-stack'
echo go | $S count --by stack $F/fixture-stack stack_leaf -- $F/fixture-stack 2>&1 | grep -v "^sonde: counting\|^21"
echo "\$ bpftrace -e 'uprobe:fixture-stack:stack_leaf { @[ustack] = count(); }'"
echo go | bpftrace -e "uprobe:$F/fixture-stack:stack_leaf { @[ustack] = count(); }" -c "$F/fixture-stack" 2>&1 | grep -v "^Attaching\|^21\|^$"
job "5. latency of known sleeps (fx_sleep_ms(20) x3, fx_work(10) x4)"
echo '$ sonde latency fixture-sleeper fx_sleep_ms fx_work -- fixture-sleeper'
echo go | $S latency $F/fixture-sleeper fx_sleep_ms fx_work -- $F/fixture-sleeper 2>&1 | grep -v "^sonde: timing" | head -4
echo "\$ bpftrace -e 'uprobe:fx_sleep_ms,fx_work { @s[tid]=nsecs } uretprobe { @[probe]=hist(nsecs-@s[tid]) }'"
echo go | bpftrace -e "uprobe:$F/fixture-sleeper:fx_sleep_ms,uprobe:$F/fixture-sleeper:fx_work { @s[tid] = nsecs; } uretprobe:$F/fixture-sleeper:fx_sleep_ms,uretprobe:$F/fixture-sleeper:fx_work /@s[tid]/ { @us[probe] = stats((nsecs - @s[tid]) / 1000); delete(@s[tid]); }" -c "$F/fixture-sleeper" 2>&1 | grep "^@us"
