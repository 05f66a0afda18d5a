//! The admin UI end to end: `hero_proc ui` as its own process, loaded in headless
//! Chromium (Debian `chromium`, installed by .ci/run) through the login URL it prints.
//! It must show a service started from git, the diff of a pending plan, and a secret's
//! name but never its value; without the login it shows nothing.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::config_repo::*;
use support::{Daemon, bin, text, wait_for};

const MARKER: &str = "UI-MARKER-5c1d7e-never-shown";

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

struct Ui {
    child: Child,
    /// `http://127.0.0.1:PORT/`
    url: String,
    /// `http://127.0.0.1:PORT/?token=...`: sets the session cookie and redirects to `/`
    /// (keeping any `#page`). Each Chromium run is a new session, so each logs in.
    login: String,
    token: String,
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ui(d: &Daemon) -> Ui {
    let mut child = Command::new(bin())
        .args(["ui", "--addr", "127.0.0.1:0"])
        .env("HERO_ROOTDIR", d.root())
        .env_remove("HERO_PROC_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let login = line.trim().strip_prefix("hero_proc ui: ").expect("the UI prints its login URL").to_owned();
    let (url, token) = login.split_once("?token=").unwrap_or_else(|| panic!("not a login URL: {login}"));
    Ui { url: url.to_owned(), token: token.to_owned(), login, child }
}

/// The DOM after the page's scripts ran.
fn dump_dom(browser: &str, profile: &Path, url: &str) -> String {
    let out = Command::new(browser)
        .args(chrome_flags(profile))
        .args(["--virtual-time-budget=4000", "--dump-dom", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {}", text(&out.stderr));
    text(&out.stdout)
}

fn screenshot(browser: &str, profile: &Path, url: &str, to: &Path) {
    let out = Command::new(browser)
        .args(chrome_flags(profile))
        .args(["--virtual-time-budget=4000", "--window-size=1280,900"])
        .arg(format!("--screenshot={}", to.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success() && to.exists(), "chromium screenshot: {}", text(&out.stderr));
}

fn chrome_flags(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_ui_shows_services_the_pending_plan_and_secret_names_only() {
    let Some(browser) = chromium() else {
        if std::env::var_os("HERO_TEST_ALLOW_SKIP").is_some_and(|v| v == "1") {
            eprintln!("SKIP: headless Chromium is needed (HERO_TEST_ALLOW_SKIP=1)");
            return;
        }
        panic!(
            "headless Chromium is needed: apt-get install chromium (.ci/run installs it), or set HERO_TEST_ALLOW_SKIP=1 to skip"
        );
    };
    let repo = ConfigRepo::new();
    repo.write("actions/web.yaml", &service("web", "from-git"));
    let first = repo.commit("web from git");
    let d = follow(&repo);
    wait_applied(&d, &first);
    wait_greeting(&d, "web", "from-git");
    let mut set = Command::new(bin())
        .args(["secret", "set", "ui_token"])
        .env("HERO_ROOTDIR", d.root())
        .env_remove("HERO_PROC_SOCKET")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin.take().unwrap().write_all(MARKER.as_bytes()).unwrap();
    assert!(set.wait().unwrap().success());
    // A pending change: suspended, so it stays a plan.
    d.json(&["reconcile", "suspend"]);
    repo.write("actions/web.yaml", &service("web", "pending-change"));
    repo.commit("pending");

    let ui = start_ui(&d);
    let profile = tempfile::tempdir().unwrap();
    // Without the login: the login page only, no data.
    let anon = dump_dom(browser, profile.path(), &ui.url);
    assert!(anon.contains("Not logged in") && !anon.contains("core/web") && !anon.contains("ui_token"), "{anon}");
    // The landing page alone shows all three.
    let home = dump_dom(browser, profile.path(), &ui.login);
    assert!(!home.contains(&ui.token), "the token stays out of the page");
    assert!(home.contains("core/web") && home.contains(">running<"), "{home}");
    assert!(home.contains("+  GREETING: pending-change"), "{home}");
    assert!(home.contains("ui_token"), "{home}");
    let services = dump_dom(browser, profile.path(), &format!("{}#services", ui.login));
    assert!(services.contains("core/web") && services.contains(">running<"), "{services}");
    let plan = dump_dom(browser, profile.path(), &format!("{}#plan", ui.login));
    assert!(plan.contains("-  GREETING: from-git") && plan.contains("+  GREETING: pending-change"), "{plan}");
    assert!(plan.contains("action core/web changed"), "the restart it implies: {plan}");
    let secrets = dump_dom(browser, profile.path(), &format!("{}#secrets", ui.login));
    assert!(secrets.contains("ui_token"), "{secrets}");
    let sync = dump_dom(browser, profile.path(), &format!("{}#sync", ui.login));
    assert!(sync.contains("SUSPENDED") && sync.contains(&first[..12]), "{sync}");
    for page in [&home, &services, &plan, &secrets, &sync] {
        assert!(!page.contains(MARKER), "a secret value reached the UI");
    }

    let shots: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("plan.png");
    screenshot(browser, profile.path(), &format!("{}#plan", ui.login), &shot);
    let home_shot = shots.join("overview.png");
    screenshot(browser, profile.path(), &ui.login, &home_shot);
    println!("screenshot: {}", home_shot.display());
    println!("screenshot: {}", shot.display());
    let rss = rss_kib(ui.child.id());
    println!("UI process RSS after serving five pages: {:.1} MiB", rss as f64 / 1024.0);
    assert!(rss > 0);

    // Resume from the UI's API as its button does (the session cookie, the browser's
    // Origin) and see the change applied.
    let host = ui.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut s = std::net::TcpStream::connect(&host).unwrap();
    write!(
        s,
        "POST /api/reconcile.resume HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nCookie: hero_proc_ui={}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ui.token
    )
    .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    wait_for("the pending change to apply", Duration::from_secs(20), || {
        greeting(&d, "web").as_deref() == Some("pending-change")
    });
}
