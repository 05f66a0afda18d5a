//! Finding this host's age identities.
//!
//! The caller fills a [`KeyEnv`] (or takes [`KeyEnv::from_process_env`]) so
//! that tests never touch the process environment. Sources are read in the
//! order of SPEC §2, and identities from **every** source that exists are
//! collected (like sops, which also merges its sources): a host can carry its
//! own key and a shared one. Each source's outcome is kept in
//! [`LoadedIdentities::sources`] so a failed decryption can say where it
//! looked. Nothing here ever prints key material: reports carry paths, env
//! variable names and counts only (not even the `SOPS_AGE_KEY_CMD` command
//! line, which might embed a key).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use age::x25519::Identity;
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::secret::SecretValue;

/// Largest key file or command output read (key files are a few hundred bytes).
const MAX_KEY_TEXT: u64 = 1024 * 1024;
/// How long `SOPS_AGE_KEY_CMD` may run.
const KEY_CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to look for age identities. Every field is optional; empty strings
/// count as unset. `Debug` hides the key text and the key command.
#[derive(Clone, Default)]
pub struct KeyEnv {
    /// `HERO_PROC_AGE_KEY_FILE`: a key file for hero_proc only.
    pub hero_proc_age_key_file: Option<PathBuf>,
    /// `SOPS_AGE_KEY_FILE`: the key file sops itself would use.
    pub sops_age_key_file: Option<PathBuf>,
    /// `SOPS_AGE_KEY`: the key text itself (one or more identities).
    pub sops_age_key: Option<SecretValue>,
    /// `HERO_ROOTDIR`: its `cfg/age/keys.txt` is read if it exists.
    pub hero_rootdir: Option<PathBuf>,
    /// `SOPS_AGE_KEY_CMD`: run with `sh -c`; its stdout is key text.
    pub sops_age_key_cmd: Option<String>,
    /// `XDG_CONFIG_HOME`: its `sops/age/keys.txt` is read if it exists.
    pub xdg_config_home: Option<PathBuf>,
    /// `HOME`: used for `~/.config` when `XDG_CONFIG_HOME` is unset (as sops
    /// does on Linux).
    pub home: Option<PathBuf>,
}

impl fmt::Debug for KeyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |b: bool| if b { Some("(set)") } else { None };
        f.debug_struct("KeyEnv")
            .field("hero_proc_age_key_file", &self.hero_proc_age_key_file)
            .field("sops_age_key_file", &self.sops_age_key_file)
            .field("sops_age_key", &set(self.sops_age_key.is_some()))
            .field("hero_rootdir", &self.hero_rootdir)
            .field("sops_age_key_cmd", &set(self.sops_age_key_cmd.is_some()))
            .field("xdg_config_home", &self.xdg_config_home)
            .field("home", &self.home)
            .finish()
    }
}

impl KeyEnv {
    /// Reads the variables above from the process environment. `HERO_ROOTDIR`
    /// defaults to `$HOME/hero` (SPEC §2).
    pub fn from_process_env() -> Self {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        }
        let home = var("HOME").map(PathBuf::from);
        KeyEnv {
            hero_proc_age_key_file: var("HERO_PROC_AGE_KEY_FILE").map(PathBuf::from),
            sops_age_key_file: var("SOPS_AGE_KEY_FILE").map(PathBuf::from),
            sops_age_key: var("SOPS_AGE_KEY").map(SecretValue::from),
            hero_rootdir: var("HERO_ROOTDIR").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join("hero"))),
            sops_age_key_cmd: var("SOPS_AGE_KEY_CMD"),
            xdg_config_home: var("XDG_CONFIG_HOME").map(PathBuf::from),
            home,
        }
    }
}

/// What happened at one identity source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceStatus {
    /// The variable is not set.
    NotSet,
    /// A default location that does not exist (not an error).
    Absent,
    /// Identities were read.
    Loaded {
        /// How many X25519 identities.
        identities: usize,
    },
    /// The source is set or exists but could not be used.
    Failed {
        /// Why (never contains key text).
        reason: String,
    },
}

/// One place identities were looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySource {
    /// Env variable or description, e.g. `SOPS_AGE_KEY_FILE`.
    pub name: &'static str,
    /// The file path, when the source is a file.
    pub path: Option<PathBuf>,
    /// The outcome.
    pub status: SourceStatus,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        if let Some(p) = &self.path {
            write!(f, " ({})", p.display())?;
        }
        match &self.status {
            SourceStatus::NotSet => f.write_str(": not set"),
            SourceStatus::Absent => f.write_str(": no such file"),
            SourceStatus::Loaded { identities } => {
                write!(f, ": {identities} identit{}", if *identities == 1 { "y" } else { "ies" })
            }
            SourceStatus::Failed { reason } => write!(f, ": {reason}"),
        }
    }
}

/// Identities ready for [`crate::decrypt`], with the record of where they
/// came from (used in "no matching identity" errors).
#[derive(Clone)]
pub struct LoadedIdentities {
    identities: Vec<Identity>,
    sources: Vec<KeySource>,
}

impl LoadedIdentities {
    /// Wraps identities the caller obtained itself (tests, other stores).
    pub fn from_identities(identities: Vec<Identity>) -> Self {
        let n = identities.len();
        LoadedIdentities {
            identities,
            sources: vec![KeySource {
                name: "caller-provided identities",
                path: None,
                status: SourceStatus::Loaded { identities: n },
            }],
        }
    }

    /// Parses key text (the format of `age-keygen` output: `#` comments and
    /// `AGE-SECRET-KEY-1...` lines). Errors name the line, never its content.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, KeyError> {
        let identities =
            parse_identities(text).map_err(|line| KeyError::Parse { source_name: source_name.into(), line })?;
        Ok(Self::from_identities(identities))
    }

    /// The identities, in source order.
    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    /// Every source looked at, in order, with its outcome.
    pub fn sources(&self) -> &[KeySource] {
        &self.sources
    }

    /// Public recipients (`age1...`) of the loaded identities: what to add to
    /// `.sops.yaml` for this host.
    pub fn recipients(&self) -> Vec<String> {
        self.identities.iter().map(|i| i.to_public().to_string()).collect()
    }
}

impl fmt::Debug for LoadedIdentities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedIdentities")
            .field("recipients", &self.recipients())
            .field("sources", &self.sources)
            .finish()
    }
}

/// Parses identity text; on error returns the 1-based line number.
fn parse_identities(text: &str) -> Result<Vec<Identity>, usize> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match Identity::from_str(line) {
            Ok(id) => out.push(id),
            Err(_) => return Err(n + 1),
        }
    }
    Ok(out)
}

/// Reads identities from every source of `env`, in this order:
/// `HERO_PROC_AGE_KEY_FILE`, `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`,
/// `$HERO_ROOTDIR/cfg/age/keys.txt`, `SOPS_AGE_KEY_CMD`,
/// `$XDG_CONFIG_HOME/sops/age/keys.txt` (or `$HOME/.config/...`).
///
/// Identities from all sources that exist are **collected** (first source
/// first), not just the first one: a source that is set but broken is
/// recorded in [`LoadedIdentities::sources`] and skipped when another source
/// works, so one stale variable does not stop a host that has a good key.
/// Fails only when no identity at all was found; the error lists every source
/// and its outcome.
pub fn load_identities(env: &KeyEnv) -> Result<LoadedIdentities, KeyError> {
    let mut identities = Vec::new();
    let mut sources = Vec::new();

    let mut record = |name: &'static str, path: Option<PathBuf>, result: Result<Vec<Identity>, SourceStatus>| {
        let status = match result {
            Ok(ids) if ids.is_empty() => SourceStatus::Failed { reason: "contains no age identity".into() },
            Ok(ids) => {
                let n = ids.len();
                identities.extend(ids);
                SourceStatus::Loaded { identities: n }
            }
            Err(status) => status,
        };
        sources.push(KeySource { name, path, status });
    };

    for (name, path) in [
        ("HERO_PROC_AGE_KEY_FILE", nonempty_path(&env.hero_proc_age_key_file)),
        ("SOPS_AGE_KEY_FILE", nonempty_path(&env.sops_age_key_file)),
    ] {
        match path {
            None => record(name, None, Err(SourceStatus::NotSet)),
            Some(p) => {
                let r = read_key_file(&p, true);
                record(name, Some(p), r);
            }
        }
    }

    match env.sops_age_key.as_ref().filter(|k| !k.expose().trim().is_empty()) {
        None => record("SOPS_AGE_KEY", None, Err(SourceStatus::NotSet)),
        Some(key) => record("SOPS_AGE_KEY", None, parse_source(key.expose())),
    }

    match nonempty_path(&env.hero_rootdir) {
        None => record("HERO_ROOTDIR key file", None, Err(SourceStatus::NotSet)),
        Some(root) => {
            let p = root.join("cfg").join("age").join("keys.txt");
            let r = read_key_file(&p, false);
            record("HERO_ROOTDIR key file", Some(p), r);
        }
    }

    match env.sops_age_key_cmd.as_deref().filter(|c| !c.trim().is_empty()) {
        None => record("SOPS_AGE_KEY_CMD", None, Err(SourceStatus::NotSet)),
        Some(cmd) => record("SOPS_AGE_KEY_CMD", None, run_key_cmd(cmd)),
    }

    let config_dir =
        nonempty_path(&env.xdg_config_home).or_else(|| nonempty_path(&env.home).map(|h| h.join(".config")));
    match config_dir {
        None => record("XDG_CONFIG_HOME sops key file", None, Err(SourceStatus::NotSet)),
        Some(dir) => {
            let p = dir.join("sops").join("age").join("keys.txt");
            let r = read_key_file(&p, false);
            record("XDG_CONFIG_HOME sops key file", Some(p), r);
        }
    }

    if identities.is_empty() {
        return Err(KeyError::NoIdentities { sources });
    }
    Ok(LoadedIdentities { identities, sources })
}

fn nonempty_path(p: &Option<PathBuf>) -> Option<PathBuf> {
    p.as_ref().filter(|p| !p.as_os_str().is_empty()).cloned()
}

fn parse_source(text: &str) -> Result<Vec<Identity>, SourceStatus> {
    parse_identities(text)
        .map_err(|line| SourceStatus::Failed { reason: format!("line {line} is not an age X25519 identity") })
}

/// Reads a key file. `explicit` files (named by a variable) that are missing
/// are failures; default locations that are missing are just absent.
fn read_key_file(path: &Path, explicit: bool) -> Result<Vec<Identity>, SourceStatus> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(if explicit {
                SourceStatus::Failed { reason: "file not found".into() }
            } else {
                SourceStatus::Absent
            });
        }
        Err(e) => return Err(SourceStatus::Failed { reason: format!("cannot open: {}", e.kind()) }),
    };
    let mut buf = Zeroizing::new(Vec::new());
    if let Err(e) = file.take(MAX_KEY_TEXT + 1).read_to_end(&mut buf) {
        return Err(SourceStatus::Failed { reason: format!("cannot read: {}", e.kind()) });
    }
    if buf.len() as u64 > MAX_KEY_TEXT {
        return Err(SourceStatus::Failed { reason: "file larger than 1 MiB, not a key file".into() });
    }
    let text = std::str::from_utf8(&buf).map_err(|_| SourceStatus::Failed { reason: "not UTF-8 text".into() })?;
    parse_source(text)
}

/// Runs `SOPS_AGE_KEY_CMD` with `sh -c`, reading its stdout as key text.
/// stderr is discarded (it could echo secrets); a hung command is killed.
fn run_key_cmd(cmd: &str) -> Result<Vec<Identity>, SourceStatus> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| SourceStatus::Failed { reason: format!("cannot run `sh`: {}", e.kind()) })?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(SourceStatus::Failed { reason: "no stdout".into() });
    };
    let reader = std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        let r = stdout.take(MAX_KEY_TEXT + 1).read_to_end(&mut buf);
        r.map(|_| buf)
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > KEY_CMD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SourceStatus::Failed { reason: "timed out after 30s".into() });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(SourceStatus::Failed { reason: format!("wait failed: {}", e.kind()) }),
        }
    };
    let buf = match reader.join() {
        Ok(Ok(buf)) => buf,
        _ => return Err(SourceStatus::Failed { reason: "could not read its output".into() }),
    };
    if !status.success() {
        return Err(SourceStatus::Failed { reason: format!("exited with {status}") });
    }
    if buf.len() as u64 > MAX_KEY_TEXT {
        return Err(SourceStatus::Failed { reason: "printed more than 1 MiB".into() });
    }
    let text =
        std::str::from_utf8(&buf).map_err(|_| SourceStatus::Failed { reason: "printed non-UTF-8 output".into() })?;
    parse_source(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn key_text() -> (String, String) {
        let id = Identity::generate();
        let text = format!("# created: now\n# public key: {}\n{}\n", id.to_public(), id.to_string().expose_secret());
        (text, id.to_public().to_string())
    }

    #[test]
    fn collects_from_every_source_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, r1) = key_text();
        let (t2, r2) = key_text();
        let (t3, r3) = key_text();
        let (t4, r4) = key_text();
        let (t5, r5) = key_text();
        let f1 = dir.path().join("k1.txt");
        std::fs::write(&f1, &t1).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("cfg/age")).unwrap();
        std::fs::write(root.join("cfg/age/keys.txt"), &t3).unwrap();
        let xdg = dir.path().join("xdg");
        std::fs::create_dir_all(xdg.join("sops/age")).unwrap();
        std::fs::write(xdg.join("sops/age/keys.txt"), &t5).unwrap();
        let cmdfile = dir.path().join("cmd.txt");
        std::fs::write(&cmdfile, &t4).unwrap();
        let env = KeyEnv {
            hero_proc_age_key_file: Some(f1),
            sops_age_key_file: None,
            sops_age_key: Some(SecretValue::from(t2)),
            hero_rootdir: Some(root),
            sops_age_key_cmd: Some(format!("cat '{}'", cmdfile.display())),
            xdg_config_home: Some(xdg),
            home: None,
        };
        let loaded = load_identities(&env).unwrap();
        assert_eq!(loaded.recipients(), vec![r1, r2, r3, r4, r5]);
        assert_eq!(loaded.sources().len(), 6);
        assert_eq!(loaded.sources()[1].status, SourceStatus::NotSet);
    }

    #[test]
    fn broken_source_is_reported_without_content() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "AGE-SECRET-KEY-1NOTAKEYMARKERXYZ\n").unwrap();
        let env = KeyEnv {
            sops_age_key_file: Some(bad),
            sops_age_key_cmd: Some("echo AGE-SECRET-KEY-1MARKERXYZ; exit 3".into()),
            ..KeyEnv::default()
        };
        let err = load_identities(&env).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("SOPS_AGE_KEY_FILE"), "{shown}");
        assert!(shown.contains("line 1"), "{shown}");
        assert!(shown.contains("SOPS_AGE_KEY_CMD"), "{shown}");
        assert!(!shown.contains("MARKERXYZ"), "{shown}");
    }

    #[test]
    fn missing_default_files_are_absent_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let env = KeyEnv { hero_rootdir: Some(dir.path().into()), home: Some(dir.path().into()), ..KeyEnv::default() };
        let KeyError::NoIdentities { sources } = load_identities(&env).unwrap_err() else { panic!() };
        assert_eq!(sources[3].status, SourceStatus::Absent);
        assert_eq!(sources[5].status, SourceStatus::Absent);
        assert!(sources[5].path.as_ref().unwrap().ends_with(".config/sops/age/keys.txt"));
    }

    #[test]
    fn key_env_debug_hides_the_key() {
        let env = KeyEnv {
            sops_age_key: Some(SecretValue::from("AGE-SECRET-KEY-1SECRETMARK".to_string())),
            ..KeyEnv::default()
        };
        assert!(!format!("{env:?}").contains("SECRETMARK"));
    }
}
