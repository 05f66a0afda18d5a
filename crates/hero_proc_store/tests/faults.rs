//! Faults an operator meets: read-only files, garbage files, a second writer, a full disk.
//! Each must give a typed error whose message names the file and says what to do, and
//! must lose no committed row.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::*;
use hero_proc_store::*;
use rusqlite::Connection;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn integrity_ok(path: &Path) {
    let c = Connection::open(path).unwrap();
    let r: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(r, "ok");
}

/// Permission checks do not apply to root (CAP_DAC_OVERRIDE). To test them anyway, run
/// `f` on a thread whose effective capabilities lack the DAC overrides: capset(2) acts on
/// the calling thread only, so nothing else in the test process is affected.
fn as_unprivileged<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscalls on stack buffers of the documented layout.
            unsafe {
                if libc::geteuid() == 0 {
                    #[repr(C)]
                    struct Header {
                        version: u32,
                        pid: i32,
                    }
                    #[repr(C)]
                    #[derive(Clone, Copy, Default)]
                    struct Data {
                        effective: u32,
                        permitted: u32,
                        inheritable: u32,
                    }
                    const V3: u32 = 0x2008_0522;
                    const DAC: u32 = (1 << 1) | (1 << 2) | (1 << 3); // DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER
                    let mut h = Header { version: V3, pid: 0 };
                    let mut d = [Data::default(); 2];
                    assert_eq!(libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()), 0);
                    d[0].effective &= !DAC;
                    assert_eq!(libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()), 0);
                }
            }
            f()
        })
        .join()
        .unwrap()
    })
}

fn seeded() -> (Tmp, usize) {
    let t = tmp();
    let store = Store::open(&t.path).unwrap();
    store
        .transaction(|tx| {
            for i in 0..25 {
                tx.put_action(&action("core", &format!("a{i}")), &Origin::git("r1"))?;
            }
            Ok(())
        })
        .unwrap();
    finished_jobs(&store, 40, 0, Phase::Succeeded);
    drop(store); // checkpoints and removes the WAL
    (t, 25)
}

#[test]
fn read_only_file_and_folder() {
    let (t, n) = seeded();
    let dir = t.path.parent().unwrap().to_path_buf();
    chmod(&t.path, 0o400);
    chmod(&dir, 0o500);
    let (err, ro_actions) = as_unprivileged(|| {
        let err = Store::open(&t.path).unwrap_err();
        let ro = Store::open_read_only(&t.path).map(|s| s.list_actions().unwrap().len());
        (err, ro)
    });
    chmod(&dir, 0o700);
    chmod(&t.path, 0o600);
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("the database file or its folder is read-only: check permissions of")
            && msg.contains(&t.path.display().to_string()),
        "{msg}"
    );
    // Reading works for `--db` commands even where the -shm file cannot be created.
    assert_eq!(ro_actions.unwrap(), n);
    // Nothing was lost or changed.
    let store = Store::open(&t.path).unwrap();
    assert_eq!(store.list_actions().unwrap().len(), n);
    assert_eq!(store.job_counts_by_phase().unwrap().succeeded, 40);
    drop(store);
    integrity_ok(&t.path);
}

#[test]
fn read_only_file_in_writable_folder() {
    let (t, n) = seeded();
    chmod(&t.path, 0o400);
    let err = as_unprivileged(|| Store::open(&t.path).unwrap_err());
    chmod(&t.path, 0o600);
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert_eq!(Store::open(&t.path).unwrap().list_actions().unwrap().len(), n);
}

#[test]
fn writable_file_in_read_only_folder() {
    // The WAL cannot be created next to the file.
    let (t, n) = seeded();
    let dir = t.path.parent().unwrap().to_path_buf();
    chmod(&dir, 0o500);
    let res =
        as_unprivileged(|| Store::open(&t.path).and_then(|s| s.put_action(&action("core", "new"), &Origin::manual())));
    chmod(&dir, 0o700);
    let err = res.unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains(&t.path.display().to_string()));
    assert_eq!(Store::open(&t.path).unwrap().list_actions().unwrap().len(), n);
}

#[test]
fn missing_folder_that_cannot_be_created() {
    let t = tmp();
    let locked = t.dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    chmod(&locked, 0o500);
    let path = locked.join("sub/hero_proc.db");
    let err = as_unprivileged(|| Store::open(&path).unwrap_err());
    chmod(&locked, 0o700);
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
}

#[test]
fn garbage_file_is_corrupt_and_left_alone() {
    let t = tmp();
    std::fs::create_dir_all(t.path.parent().unwrap()).unwrap();
    let garbage: Vec<u8> = (0..16384u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&t.path, &garbage).unwrap();
    let err = Store::open(&t.path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("restore from backup or move the file aside; hero_proc will create a new one"), "{msg}");
    assert!(msg.contains(&t.path.display().to_string()), "{msg}");
    assert!(matches!(Store::open_read_only(&t.path).unwrap_err(), StoreError::Corrupt { .. }));
    assert_eq!(std::fs::read(&t.path).unwrap(), garbage, "the file is not touched");
}

#[test]
fn damaged_pages_are_corrupt() {
    let (t, _) = seeded();
    let c = Connection::open(&t.path).unwrap();
    let page_size: u64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    drop(c);
    let mut bytes = std::fs::read(&t.path).unwrap();
    // Keep page 1 (header and schema), trash the rest.
    for b in &mut bytes[page_size as usize..] {
        *b = 0xA5;
    }
    std::fs::write(&t.path, &bytes).unwrap();
    let err = Store::open(&t.path).and_then(|s| s.list_jobs(&JobFilter::default()).map(|_| ())).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn second_writer_gets_busy_after_the_timeout() {
    let (t, store) = open();
    let other = Store::open_with(&t.path, &StoreOptions { busy_timeout: Duration::from_millis(200) }).unwrap();
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let store = &store;
        s.spawn(move || {
            store
                .transaction(|tx| {
                    tx.put_action(&action("core", "holder"), &Origin::manual())?;
                    locked_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
                .unwrap();
        });
        locked_rx.recv().unwrap();
        let t0 = Instant::now();
        let err = other.put_action(&action("core", "waiter"), &Origin::manual()).unwrap_err();
        let waited = t0.elapsed();
        assert!(matches!(err, StoreError::Busy { waited_ms: 200, .. }), "{err:?}");
        assert!(err.is_transient());
        assert!(waited >= Duration::from_millis(190), "{waited:?}");
        assert!(err.to_string().contains(&t.path.display().to_string()), "{err}");
        // WAL: readers are not blocked by the writer.
        assert!(other.list_actions().unwrap().is_empty());
        release_tx.send(()).unwrap();
    });
    // Once the lock is gone the same write goes through.
    other.put_action(&action("core", "waiter"), &Origin::manual()).unwrap();
    assert_eq!(store.list_actions().unwrap().len(), 2);
}

/// `disk_full_is_reported_and_loses_nothing` runs this in a child process whose file-size
/// limit (RLIMIT_FSIZE) makes writes fail like on a full disk. Does nothing otherwise.
#[test]
fn disk_full_child() {
    let Ok(path) = std::env::var("HERO_STORE_TEST_DISK_FULL_DB") else { return };
    let store = Store::open(&path).unwrap();
    let mut a = action("core", "filler");
    a.script = "y".repeat(64 * 1024);
    for i in 0.. {
        a.name = format!("filler{i}");
        match store.put_action(&a, &Origin::manual()) {
            Ok(()) => continue,
            Err(e) => {
                assert!(matches!(e, StoreError::DiskFull { .. }), "expected DiskFull, got {e:?}");
                assert!(e.to_string().contains("free space on the filesystem holding"), "{e}");
                // Still usable for reads after the failed write.
                let n = store.list_actions().unwrap().len();
                println!("DISK_FULL_OK committed={i} listed={n} error={e}");
                return;
            }
        }
    }
}

#[test]
fn disk_full_is_reported_and_loses_nothing() {
    let (t, n) = seeded();
    let limit = std::fs::metadata(&t.path).unwrap().len() + 512 * 1024;
    // The test's name as libtest knows it: its module path without the binary's name.
    let child = format!("{}::disk_full_child", module_path!().split_once("::").map_or("", |(_, m)| m));
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", child.as_str(), "--nocapture", "--test-threads=1"])
        .env("HERO_STORE_TEST_DISK_FULL_DB", &t.path);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Without this the kernel kills the writer with SIGXFSZ instead of failing the write.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.split("DISK_FULL_OK").nth(1).unwrap_or_else(|| panic!("{stdout}"));
    let committed: usize = line.split_whitespace().next().unwrap().trim_start_matches("committed=").parse().unwrap();
    assert!(committed > 0, "some writes fit before the limit: {line}");
    // Every committed row survived, and the file is sound.
    let store = Store::open(&t.path).unwrap();
    assert_eq!(store.list_actions().unwrap().len(), n + committed, "{line}");
    drop(store);
    integrity_ok(&t.path);
}
