#!/usr/bin/env python3
"""Cold start to 50 running, without a CLI process polling beside it:

    python3 tests/bench/cold_start.py target/release/hero_proc [STARTS]

Sets 50 `sleep MARK` services (`status: start`) on a fresh root, then STARTS times
(default 5): stop the daemon (`--stop-on-exit`: its services go too), launch it again and
read /proc/*/cmdline every 2 ms until the 50 `sleep MARK` processes are there. Prints each
start (when the socket appeared, the first and the fiftieth process) and the median.
`cargo bench --bench engine` measures the same moment with a `hero_proc service list`
process every 10 ms beside it, which competes for the same 2 cores (docs/PERFORMANCE.md).
"""
import os, shutil, signal, subprocess, sys, tempfile, time

binary = os.path.realpath(sys.argv[1])
starts = int(sys.argv[2]) if len(sys.argv) > 2 else 5
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
        t0 = time.monotonic()
        daemon = launch()
        first = socket_at = None
        while True:
            n = sleepers()
            t = (time.monotonic() - t0) * 1000
            if socket_at is None and os.path.exists(sock):
                socket_at = t
            if n and first is None:
                first = t
            if n == 50:
                break
            if t > 60_000:
                sys.exit("timed out waiting for 50 services after a cold start")
            time.sleep(0.002)
        took.append(t)
        print(f"socket {socket_at or -1:.1f} ms, first process {first:.1f} ms, all 50 {t:.1f} ms")
    took.sort()
    print(f"cold start to 50 running: median {took[len(took) // 2]:.1f} ms of {starts}")
finally:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait()
    shutil.rmtree(root, ignore_errors=True)
