#!/usr/bin/env python3
"""Cold start to 50 running, without a CLI process polling beside it:

    python3 tests/bench/cold_start.py target/release/hero_proc [STARTS]

Sets 50 `sleep MARK` services (`status: start`) on a fresh root, then STARTS times
(default 5): stop the daemon (`--stop-on-exit`: its services go too), launch it again and
wait until the 50 `sleep MARK` processes have exec'd. Prints each start (the first and the
fiftieth exec, the daemon's CPU) and the median.

How it watches: as root, the kernel's process-events connector (netlink) reports every
exec with its kernel timestamp, so the watcher sleeps until an exec happens and takes no
CPU from the 2 cores the daemon and its 50 children share; a poll of /proc/*/cmdline
every 2 ms (the fallback, and what stop 30 measured) took 10-20 ms of CPU per start.
`--poll` forces the poll. `cargo bench --bench engine` measures the same moment with a
`hero_proc service list` process every 10 ms beside it (docs/PERFORMANCE.md).
"""
import os, shutil, signal, socket, struct, subprocess, sys, tempfile, time

args = [a for a in sys.argv[1:] if a != "--poll"]
force_poll = "--poll" in sys.argv
binary = os.path.realpath(args[0])
starts = int(args[1]) if len(args) > 1 else 5
root = tempfile.mkdtemp(prefix="hero-cold-")
env = dict(os.environ, HERO_ROOTDIR=root, HERO_PROC_NO_AUTOSTART_DB="1", RUST_LOG="warn")
mark = str(7_000_000 + os.getpid() % 1_000_000)
want = f"sleep\0{mark}\0".encode()
sock = os.path.join(root, "var/sockets/hero_proc.sock")


def sleepers():
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    n += f.read() == want
            except OSError:
                pass
    return n


def until(what, f, every=0.01, limit=60):
    t = time.monotonic()
    while not f():
        if time.monotonic() - t > limit:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(every)


def exec_events():
    """A netlink socket subscribed to the kernel's process events, or None (not root)."""
    NETLINK_CONNECTOR, CN_IDX_PROC, CN_VAL_PROC, LISTEN = 11, 1, 1, 1
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((0, CN_IDX_PROC))
        op = struct.pack("=I", LISTEN)
        cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
        s.send(struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn)  # NLMSG_DONE
        return s
    except OSError:
        return None


def execs(events, deadline_ns):
    """(kernel time in ns, pid) of each exec reported until the deadline."""
    PROC_EVENT_EXEC = 2
    while True:
        left = (deadline_ns - time.monotonic_ns()) / 1e9
        if left <= 0:
            return
        events.settimeout(left)
        try:
            data = events.recv(65536)
        except socket.timeout:
            return
        off = 0
        while off + 16 <= len(data):
            length = struct.unpack_from("=I", data, off)[0]
            # nlmsghdr (16) + cn_msg (20) + proc_event: what, cpu, timestamp_ns, pid, tgid
            what, _cpu, ts, pid, tgid = struct.unpack_from("=IIQii", data, off + 36)
            if what == PROC_EVENT_EXEC and pid == tgid:
                yield ts, pid
            off += (length + 3) & ~3


def cpu_ms(pid):
    """The CPU time of every thread of a process so far (ns resolution, schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except OSError:
            pass
    return total / 1e6


def launch():
    return subprocess.Popen([binary, "serve", "--stop-on-exit"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


with open(os.path.join(root, "svc.yaml"), "w") as f:
    f.write("actions:\n" + "".join(f"  - name: s{i}\n    interpreter: exec\n    script: sleep {mark}\n    process: true\n" for i in range(50)))
    f.write("services:\n" + "".join(f"  - name: s{i}\n    status: start\n    actions: [s{i}]\n" for i in range(50)))
daemon = launch()
try:
    until("the socket", lambda: os.path.exists(sock))
    subprocess.run([binary, "service", "set", os.path.join(root, "svc.yaml")], env=env, check=True, stdout=subprocess.DEVNULL)
    until("50 services", lambda: sleepers() == 50)
    took = []
    for _ in range(starts):
        daemon.send_signal(signal.SIGTERM)
        daemon.wait()
        until("the services to stop", lambda: sleepers() == 0)
        time.sleep(0.3)
        events = None if force_poll else exec_events()
        used_events = events is not None
        t0 = time.monotonic_ns()
        daemon = launch()
        first = None
        if events:
            seen = 0
            for ts, pid in execs(events, t0 + 60 * 10**9):
                try:
                    ours = open(f"/proc/{pid}/cmdline", "rb").read() == want
                except OSError:
                    ours = False
                if ours:
                    seen += 1
                    t = (ts - t0) / 1e6
                    first = first or t
                    if seen == 50:
                        break
            events.close()
            if seen < 50:
                sys.exit(f"timed out: {seen} of 50 services exec'd within 60 s of a cold start")
        else:
            while True:
                n = sleepers()
                t = (time.monotonic_ns() - t0) / 1e6
                if n and first is None:
                    first = t
                if n == 50:
                    break
                if t > 60_000:
                    sys.exit("timed out waiting for 50 services after a cold start")
                time.sleep(0.002)
        took.append(t)
        print(f"first process {first:.1f} ms, all 50 {t:.1f} ms, daemon CPU by then {cpu_ms(daemon.pid):.1f} ms")
    took.sort()
    how = "exec events" if used_events else "/proc polled every 2 ms"
    print(f"cold start to 50 running ({how}): median {took[len(took) // 2]:.1f} ms of {starts}")
finally:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait()
    shutil.rmtree(root, ignore_errors=True)
