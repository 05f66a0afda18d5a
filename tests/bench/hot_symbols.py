#!/usr/bin/env python3
"""Regenerate crates/hero_proc/hot-symbols.txt, the functions the daemon runs, and
crates/hero_proc/hot-rodata.ld, the read-only data it reads, which the linker packs
together at the start of .text and .rodata (see crates/hero_proc/build.rs).

    python3 tests/bench/hot_symbols.py                # builds the release binary first
    python3 tests/bench/hot_symbols.py --rodata-only  # keep hot-symbols.txt
    python3 tests/bench/hot_symbols.py --check        # only report how much of the list matches

Why: the kernel maps a binary's code in 64 KiB (or larger folio) windows around each page
the process touches. Unordered, the ~3 MB of code a daemon runs is spread over 19 MB of
.text and drags about 10 MB of it into the daemon's RSS. Packed, it costs its own size.

How: the release daemon runs under valgrind's callgrind (every function executed, by
mangled name) three times: as a plain supervisor (a boot, 60 services set, lists, status,
a stop and a start), once without RUST_LOG and once with RUST_LOG=warn, then following a
git repository (a sync, runs and jobs, logs, metrics, a restart, a new commit, a dry
run). The supervisor's functions come first in the list, so
a daemon without a repository touches only the start of it. Only names the binary defines
are kept. The paths valgrind makes the daemon skip are added by name: clone3, pidfd and
the runtime's registration of its descriptors, the CPU's SHA instructions (found by
`perf record -e page-faults -d` on the native daemon: faults outside the packed code).

The data, and the code that runs only natively: the same scenarios run natively with
readahead off, each page the daemon touches read alone, so /proc/PID/pagemap shows
exactly the pages it touched; see `hot_rodata` below. The functions on the code pages
touched join the list. That part needs root (it switches readahead off on the build's disk
for a few seconds, and restores it).

Names carry crate hashes (rustc version, dependency versions), and the constants' section
names a counter that moves with their crate's code (`.Lanon.<hash>.<n>`): a list from
another toolchain, after a dependency bump or a code change matches less and packs less,
silently (the build passes --no-warn-symbol-ordering; a script line matches nothing).
`--check` prints the share of functions that still match; rerun this script when it falls,
and after any change before measuring memory (needs valgrind and nm: `apt-get install
valgrind binutils`).
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


def run_daemon(command, cli_binary, root, env, scenario, inspect=None):
    """Run COMMAND (a `hero_proc serve ...`) through `scenario(cli, sock)`, the CLI being
    CLI_BINARY; `inspect(pid)` before the SIGTERM."""
    daemon = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(root, "serve.log"), "w"))
    sock = os.path.join(root, "var/sockets/hero_proc.sock")
    deadline = time.time() + 300
    while not os.path.exists(sock):
        if daemon.poll() is not None or time.time() > deadline:
            sys.exit(f"error: the daemon did not start; see {root}/serve.log")
        time.sleep(0.2)

    def cli(*args, ok=True):
        r = subprocess.run([cli_binary, *args], env=env, capture_output=True, text=True, timeout=300)
        if ok and r.returncode != 0:
            sys.exit(f"error: hero_proc {' '.join(args)}: {r.stderr}")
        return r

    try:
        scenario(cli, sock)
        if inspect:
            return inspect(daemon.pid)
    finally:
        # Both daemons run with --stop-on-exit: SIGTERM takes their services with them.
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=300)


def callgrind(root, env, args, scenario):
    """The functions `hero_proc serve ARGS` runs under callgrind through `scenario`, by
    mangled name."""
    out = os.path.join(root, "callgrind.out")
    valgrind = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}"]
    run_daemon([*valgrind, BIN, "serve", *args], BIN, root, env, scenario)
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
    """The daemon's everyday life: a boot, 60 services set, lists and status, stops."""
    svc = os.path.join(root, "svc.yaml")
    with open(svc, "w") as f:
        f.write("actions:\n" + "".join(f"  - name: s{i}\n    script: sleep 10000{i}\n    process: true\n" for i in range(50)))
        f.write("services:\n" + "".join(f"  - name: s{i}\n" for i in range(50)))

    # And ten more the way `cargo bench --bench engine` adds its 50: one file and one call
    # each, an exec interpreter and a stop block.
    one = []
    for i in range(10):
        one.append(os.path.join(root, f"e{i}.yaml"))
        with open(one[-1], "w") as f:
            f.write(f"actions:\n  - name: e{i}\n    interpreter: exec\n    script: sleep 10001{i}\n    process: true\n"
                    "    stop: { signal: SIGTERM, timeout: 10s }\n"
                    f"services:\n  - name: e{i}\n    status: start\n    actions: [e{i}]\n")

    def scenario(cli, sock):
        cli("service", "set", svc)
        for f in one:
            cli("service", "set", f)
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


def each_scenario(run):
    """`run(root, env, args, scenario)` for the plain supervisor (with no RUST_LOG, as
    operators run it, and with RUST_LOG=warn, as the benches do), then the git follower,
    each in a fresh HERO_ROOTDIR: (the union of the supervisors' results, the follower's)."""
    results = []
    for rust_log in (None, "warn"):
        root, env = root_env(rust_log)
        results.append(run(root, env, ["--stop-on-exit"], plain_supervisor(root)))
        shutil.rmtree(root, ignore_errors=True)
    root, env = root_env("warn")
    repo = os.path.join(root, "repo")
    results.append(run(root, env, ["--stop-on-exit", "--repo", repo], git_follower(root, repo)))
    shutil.rmtree(root, ignore_errors=True)
    return results[0] | results[1], results[2]


# --- .rodata: which constants the daemon reads, page by page -------------------------------
#
# No tool lists the data a program reads the way callgrind lists the functions it runs, but
# the kernel can: with readahead off and none of a copy's pages cached, each page the daemon
# touches is read alone, and fault-around (which maps the *cached* pages around a fault) has
# nothing to add. /proc/PID/pagemap then shows exactly the pages touched. A link map says
# which input sections (one per constant or jump table) lie on them. Pages hold many
# sections, so a second link gives each candidate a page of its own, and a second trace
# names the sections read.

RODATA_OUT = os.path.join(REPO, "crates/hero_proc/hot-rodata.ld")
TRACE_DIR = os.path.join(os.path.dirname(os.path.dirname(BIN)), "hot-trace")
PAGE = 4096
MERGED = (".rodata.str", ".rodata.cst")  # strings and constants merged across objects: cannot be split


def link(map_path, script=None):
    """Relink the release binary, writing a link map; with SCRIPT as its .rodata order."""
    env = dict(os.environ)
    env.pop("HERO_PROC_RODATA_ORDER", None)
    if script:
        env["HERO_PROC_RODATA_ORDER"] = script
    subprocess.run(["cargo", "rustc", "--release", "-p", "hero_proc", "--bin", "hero_proc", "--",
                    "-C", f"link-arg=-Wl,-Map={map_path}"], cwd=REPO, env=env, check=True)


def rodata_sections(map_path):
    """(address, size, input section name) of the .rodata in an lld link map."""
    inside = False
    for line in open(map_path, errors="replace"):
        # "VMA LMA Size Align Name": an output section's name follows one space, an input
        # section's nine, a symbol's (or an assignment's) more.
        m = re.match(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+( +)(\S.*)$", line)
        if not m:
            continue
        indent, what = len(m.group(3)), m.group(4).strip()
        if indent == 1:
            if inside:
                return
            inside = what == ".rodata"
        elif inside:
            named = re.search(r":\((\.rodata[^)]*)\)$", what)
            if named and int(m.group(2), 16):
                yield int(m.group(1), 16), int(m.group(2), 16), named.group(1)


def on_pages(sections, pages):
    """Names of the splittable sections that overlap PAGES, in address order, once each."""
    seen = {}
    for addr, size, name in sections:
        if not name.startswith(MERGED) and any(p in pages for p in range(addr // PAGE, (addr + size - 1) // PAGE + 1)):
            seen.setdefault(name, None)
    return list(seen)


class NoReadahead:
    """Readahead off on the device that holds PATH, restored on exit."""

    def __init__(self, path):
        dev = os.stat(path).st_dev
        self.knob = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"

    def __enter__(self):
        try:
            self.saved = open(self.knob).read().strip()
            open(self.knob, "w").write("0")
        except OSError as e:
            sys.exit(f"error: cannot switch readahead off ({self.knob}: {e}); tracing .rodata needs root")

    def __exit__(self, *exc):
        open(self.knob, "w").write(self.saved)


def libc():
    import ctypes
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mmap.restype = ctypes.c_void_p
    lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    lib.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return lib


def cached_pages(path):
    """How many of PATH's pages are in the page cache (mincore)."""
    import ctypes
    lib, size = libc(), os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = lib.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        vec = (ctypes.c_ubyte * ((size + PAGE - 1) // PAGE))()
        if lib.mincore(addr, size, vec) != 0:
            sys.exit(f"error: mincore({path}) failed: errno {ctypes.get_errno()}")
        lib.munmap(addr, size)
        return sum(b & 1 for b in vec)
    finally:
        os.close(fd)


def touched_pages(pid, binary):
    """The pages of BINARY resident in PID, as page numbers of its link addresses, each
    with its mapping's permissions ("r-xp", ...). Also used by resident_by_crate.py."""
    maps = []
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        if len(f) >= 6 and f[5] == binary:
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            maps.append((lo, hi, int(f[2], 16), f[1]))
    base = min(lo - off for lo, hi, off, _ in maps)
    pages = {}
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        for lo, hi, _, perm in maps:
            pm.seek(lo // PAGE * 8)
            entries = pm.read((hi - lo) // PAGE * 8)
            for i in range((hi - lo) // PAGE):
                if entries[i * 8 + 7] & 0x80:  # bit 63: present
                    pages[(lo - base) // PAGE + i] = perm
    return pages


def traced(root, env, args, scenario):
    """The pages of the release binary that `hero_proc serve ARGS` touches through SCENARIO."""
    os.makedirs(TRACE_DIR, exist_ok=True)
    copy = os.path.join(TRACE_DIR, "hero_proc")  # on the build's disk: tmpfs pages cannot be dropped
    if os.path.exists(copy):
        os.unlink(copy)  # a new inode: none of its pages cached
    shutil.copyfile(BIN, copy)
    os.chmod(copy, 0o755)
    os.sync()
    fd = os.open(copy, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    if cached_pages(copy):
        sys.exit(f"error: {copy}: the kernel kept {cached_pages(copy)} cached pages; the trace would not be exact")
    with NoReadahead(copy):
        return run_daemon([copy, "serve", *args], BIN, root, env, scenario, lambda pid: touched_pages(pid, copy))


def hot_rodata():
    """Write crates/hero_proc/hot-rodata.ld: the .rodata sections each scenario reads."""
    os.makedirs(TRACE_DIR, exist_ok=True)
    plain_map, spread_map = (os.path.join(TRACE_DIR, n) for n in ("plain.map", "spread.map"))
    link(plain_map)
    pages = set().union(*(p.keys() for p in each_scenario(traced)))
    candidates = on_pages(rodata_sections(plain_map), pages)
    spread = os.path.join(TRACE_DIR, "spread.ld")
    with open(spread, "w") as f:
        f.write("SECTIONS {\n  .rodata : {\n")
        f.writelines(f'    . = ALIGN({PAGE});\n    *("{name}")\n' for name in candidates)
        f.write(f"    . = ALIGN({PAGE});\n  }}\n}} INSERT BEFORE .text;\n")
    link(spread_map, spread)
    sections = list(rodata_sections(spread_map))
    first, second = (on_pages(sections, p) for p in each_scenario(traced))
    second = [n for n in second if n not in set(first)]
    with open(RODATA_OUT, "w") as f:
        f.write("/* The .rodata the daemon reads, packed first (crates/hero_proc/build.rs). Written by\n"
                "   tests/bench/hot_symbols.py: a plain supervisor's, the merged strings and\n"
                "   constants, then a git follower's. */\nSECTIONS {\n  .rodata : {\n")
        f.writelines(f'    *("{n}")\n' for n in first)
        f.write("    *(.rodata.str*)\n    *(.rodata.cst*)\n")
        f.writelines(f'    *("{n}")\n' for n in second)
        f.write("  }\n} INSERT BEFORE .text;\n")
    size = {n: s for _, s, n in sections}
    print(f"{len(first)} + {len(second)} .rodata sections ({sum(size[n] for n in first + second) // 1024} kB)"
          f" of {len(candidates)} candidates written to {RODATA_OUT}")


def main():
    if "--check" in sys.argv:
        return check()
    for tool in ("valgrind", "nm", "git"):
        if not shutil.which(tool):
            sys.exit(f"error: {tool} is not installed; this script needs it (apt-get install valgrind binutils git)")
    if "--rodata-only" not in sys.argv:
        hot_functions()
    hot_rodata()
    # The release binary as the repository builds it, with both lists.
    subprocess.run(["cargo", "build", "--release", "-p", "hero_proc"], cwd=REPO, check=True)


def hot_functions():
    subprocess.run(["cargo", "build", "--release", "-p", "hero_proc"], cwd=REPO, check=True)
    have = defined_symbols(BIN)
    first, second = (ran & have for ran in each_scenario(callgrind))
    # What valgrind makes the daemon skip: it refuses clone3 and pidfd_open (the daemon falls
    # back to fork and to SIGCHLD there) and hides the CPU's SHA extensions.
    native = re.compile(r"clone_into|pidfd|async_fd|7runtime2io|shani|sha256.{0,3}x86")
    first |= {s for s in have if native.search(s)}
    write_functions(first, second)
    # What else runs natively (timing, the paths above): the functions on the code pages
    # the daemon touches, traced as for .rodata, in a build that packs the lists above.
    subprocess.run(["cargo", "build", "--release", "-p", "hero_proc"], cwd=REPO, check=True)
    on_page = functions_by_page(BIN)
    native1, native2 = ({f for pg in pages for f in on_page.get(pg, ())} for pages in each_scenario(traced))
    print(f"natively also: {len(native1 - first)} + {len(native2 - first - second - native1)} functions")
    write_functions(first | native1, second | native2)


def functions_by_page(binary):
    """Page number -> the functions (mangled) that have code on it."""
    out = subprocess.run(["nm", "-n", "-S", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    by_page = {}
    for f in (l.split() for l in out.splitlines()):
        if len(f) == 4 and f[2] in "tTwW":
            addr, size = int(f[0], 16), max(1, int(f[1], 16))
            for p in range(addr // PAGE, (addr + size - 1) // PAGE + 1):
                by_page.setdefault(p, []).append(f[3])
    return by_page


def write_functions(first, second):
    # Everyday code first, so a daemon that never follows a repository touches only it.
    order = sorted(first) + sorted(second - first)
    with open(OUT, "w") as f:
        f.write("\n".join(order) + "\n")
    print(f"{len(first)} + {len(order) - len(first)} functions written to {OUT}")


if __name__ == "__main__":
    main()
