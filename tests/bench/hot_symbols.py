#!/usr/bin/env python3
"""Regenerate crates/hero_proc/hot-symbols.txt: the functions the daemon runs, which the
linker packs together at the start of .text (see crates/hero_proc/build.rs).

    python3 tests/bench/hot_symbols.py            # builds the release binary first
    python3 tests/bench/hot_symbols.py --check    # only report how much of the list matches

Why: the kernel maps a binary's code in 64 KiB (or larger folio) windows around each page
the process touches. Unordered, the ~3 MB of code a daemon runs is spread over 19 MB of
.text and drags about 10 MB of it into the daemon's RSS. Packed, it costs its own size.

How: the release daemon runs under valgrind's callgrind (every function executed, by
mangled name) twice: as a plain supervisor (a boot, 50 services set, lists, status, a stop
and a start), then following a git repository (a sync, runs and jobs, logs, metrics, a
restart, a new commit, a dry run). The first run's functions come first in the list, so
a daemon without a repository touches only the start of it. Only names the binary defines
are kept. The paths valgrind makes the daemon skip are added by name: clone3, pidfd and
the runtime's registration of its descriptors, the CPU's SHA instructions (found by
`perf record -e page-faults -d` on the native daemon: faults outside the packed code).

Names carry crate hashes (rustc version, dependency versions): a list from another
toolchain or after a dependency bump matches less and packs less, silently (the build
passes --no-warn-symbol-ordering). `--check` prints the share that still matches; rerun
this script when it falls (needs valgrind and nm: `apt-get install valgrind binutils`).
"""
import os, re, shutil, signal, socket, subprocess, sys, tempfile, time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "crates/hero_proc/hot-symbols.txt")
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release/hero_proc")


def defined_symbols(binary):
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    return {f[2] for f in (l.split() for l in out.splitlines()) if len(f) == 3 and f[1] in "tTwW"}


def check():
    listed = [l for l in open(OUT).read().split("\n") if l]
    have = defined_symbols(BIN)
    hits = sum(1 for s in listed if s in have)
    print(f"{hits} of {len(listed)} listed symbols are in {BIN} ({100 * hits / max(1, len(listed)):.0f}%)")


def http(sock, method, path, body=b""):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(120)
    s.connect(sock)
    s.sendall(f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
    while s.recv(65536):
        pass
    s.close()


def callgrind(root, env, args, scenario):
    """Run `hero_proc serve ARGS` under callgrind through `scenario(cli, sock)`, then
    SIGTERM; the functions it ran, by mangled name."""
    out = os.path.join(root, "callgrind.out")
    daemon = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}", BIN, "serve", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "serve.log"), "w"),
    )
    sock = os.path.join(root, "var/sockets/hero_proc.sock")
    deadline = time.time() + 300
    while not os.path.exists(sock):
        if daemon.poll() is not None or time.time() > deadline:
            sys.exit(f"error: the daemon did not start under valgrind; see {root}/serve.log")
        time.sleep(0.2)

    def cli(*args, ok=True):
        r = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=300)
        if ok and r.returncode != 0:
            sys.exit(f"error: hero_proc {' '.join(args)}: {r.stderr}")
        return r

    try:
        scenario(cli, sock)
    finally:
        # Both daemons run with --stop-on-exit: SIGTERM takes their services with them.
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=300)
    ran = set()
    for line in open(out, errors="replace"):
        m = re.match(r"^c?fn=\(\d+\) (.+)$", line)
        if m:
            ran.add(m.group(1).strip())
    return ran


def root_env(rust_log):
    root = tempfile.mkdtemp(prefix="hero-hot-")
    env = dict(os.environ, HERO_ROOTDIR=root, HERO_PROC_NO_AUTOSTART_DB="1")
    env.pop("HERO_PROC_SOCKET", None)
    env.pop("RUST_LOG", None)
    if rust_log:
        env["RUST_LOG"] = rust_log
    return root, env


def plain_supervisor(root):
    """The daemon's everyday life: a boot, 50 services set, lists and status, stops."""
    svc = os.path.join(root, "svc.yaml")
    with open(svc, "w") as f:
        f.write("actions:\n" + "".join(f"  - name: s{i}\n    script: sleep 10000{i}\n    process: true\n" for i in range(50)))
        f.write("services:\n" + "".join(f"  - name: s{i}\n" for i in range(50)))

    def scenario(cli, sock):
        cli("service", "set", svc)
        time.sleep(3)
        for fmt in ("text", "json"):
            cli("--format", fmt, "service", "list")
            cli("--format", fmt, "status", ok=False)
        cli("service", "stop", "s1")
        time.sleep(2)
        cli("service", "start", "s1")
        cli("service", "status", "s1")

    return scenario


def git_follower(root, repo):
    """The rest: a repository followed, runs and jobs, logs, metrics, a new commit."""
    git = lambda *a: subprocess.run(["git", "-C", repo, *a], check=True, capture_output=True)

    def write_web(greeting):
        with open(os.path.join(repo, "actions/web.yaml"), "w") as f:
            f.write(
                "actions:\n  - name: web\n    interpreter: exec\n    script: sleep 100001\n    process: true\n"
                f"    env: {{ GREETING: \"{greeting}\" }}\n"
                "    health:\n      - tcp: 127.0.0.1:1\n        period: 1s\n"
                "  - name: hello\n    script: echo hello\n"
                "services:\n  - name: web\n    actions: [web]\n"
            )

    os.makedirs(os.path.join(repo, "actions"))
    git("init", "-q", "-b", "main")
    git("config", "user.email", "hot@example.invalid")
    git("config", "user.name", "hot")
    write_web("one")
    with open(os.path.join(repo, "hero.yaml"), "w") as f:
        f.write("required_services: [web]\n")
    git("add", "-A")
    git("commit", "-qm", "one")
    t = os.path.join(root, "t.yaml")
    with open(t, "w") as f:
        f.write("actions:\n  - name: t\n    interpreter: exec\n    script: 'true'\n")

    def scenario(cli, sock):
        cli("reconcile", "now", ok=False)
        cli("action", "set", t)
        for _ in range(3):
            cli("run", "submit", "t")
        cli("run", "submit", "hello", "t")
        time.sleep(5)
        for args in (["job", "list"], ["run", "list"], ["job", "logs", "1"], ["log"], ["action", "list"],
                     ["service", "get", "web"], ["reconcile", "status"], ["history"], ["system", "info"],
                     ["system", "compactor-status"], ["secret", "list"], ["migrate", "status"]):
            cli(*args, ok=False)
        http(sock, "GET", "/metrics")
        http(sock, "GET", "/metrics/services")
        cli("service", "restart", "web")
        write_web("two")
        git("commit", "-qam", "two")
        cli("reconcile", "now", ok=False)
        cli("reconcile", "--dry-run", ok=False)
        time.sleep(5)
        cli("status", ok=False)

    return scenario


def main():
    if "--check" in sys.argv:
        return check()
    for tool in ("valgrind", "nm", "git"):
        if not shutil.which(tool):
            sys.exit(f"error: {tool} is not installed; this script needs it (apt-get install valgrind binutils git)")
    subprocess.run(["cargo", "build", "--release", "-p", "hero_proc"], cwd=REPO, check=True)
    have = defined_symbols(BIN)
    root, env = root_env(None)
    first = callgrind(root, env, ["--stop-on-exit"], plain_supervisor(root)) & have
    shutil.rmtree(root, ignore_errors=True)
    root, env = root_env("warn")
    repo = os.path.join(root, "repo")
    second = callgrind(root, env, ["--stop-on-exit", "--repo", repo], git_follower(root, repo)) & have
    shutil.rmtree(root, ignore_errors=True)
    # What valgrind makes the daemon skip: it refuses clone3 and pidfd_open (the daemon falls
    # back to fork and to SIGCHLD there) and hides the CPU's SHA extensions.
    native = re.compile(r"clone_into|pidfd|async_fd|7runtime2io|shani|sha256.{0,3}x86")
    first |= {s for s in have if native.search(s)}
    # Everyday code first, so a daemon that never follows a repository touches only it.
    order = sorted(first) + sorted(second - first)
    with open(OUT, "w") as f:
        f.write("\n".join(order) + "\n")
    print(f"{len(first)} + {len(order) - len(first)} functions written to {OUT} (of {len(have)} in the binary)")


if __name__ == "__main__":
    main()
