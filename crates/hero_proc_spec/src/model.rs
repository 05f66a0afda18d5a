//! The desired-state model: what an operator writes in the config repository.
//!
//! Field order here is the canonical order: the reconciler prints diffs of these types
//! serialised as YAML, so two equal objects always print the same text. Source
//! positions ride along for error messages but never take part in equality or output.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::diag::Pos;

/// The context objects live in when the file does not say.
pub const DEFAULT_CONTEXT: &str = "core";

/// What kind of object a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Action,
    Service,
    Secret,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Action => "action",
            Kind::Service => "service",
            Kind::Secret => "secret",
        })
    }
}

/// The identity of an object: `(kind, context, name)`, unique across a tree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub context: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.context, self.name)
    }
}

/// A name written in a file, with where it was written. Equality ignores the place.
#[derive(Clone, Debug, Default)]
pub struct Named {
    pub name: String,
    pub pos: Pos,
}

impl Named {
    pub fn new(name: impl Into<String>) -> Named {
        Named { name: name.into(), pos: Pos::default() }
    }
    /// Split an optional `context/` prefix: `core/hero_db` -> (Some("core"), "hero_db").
    pub fn split(&self) -> (Option<&str>, &str) {
        crate::Ref::split(&self.name)
    }
}

impl PartialEq for Named {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Named {}

impl<'de> Deserialize<'de> for Named {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Named::new)
    }
}

impl Serialize for Named {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// A duration as written (`500ms`, `10s`, `5m`, `1h`, `2d`), printed back canonically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::schema::parse_duration(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Interpreter {
    /// An argv split like a shell would, but run with no shell: no expansion, no injection.
    #[default]
    Exec,
    Bash,
    Sh,
    Python3,
}

impl Interpreter {
    pub const NAMES: [&'static str; 4] = ["exec", "bash", "sh", "python3"];
    /// The word files and the CLI use (`NAMES` is in variant order).
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
    pub fn parse(s: &str) -> Option<Interpreter> {
        Some(match s {
            "exec" => Interpreter::Exec,
            "bash" => Interpreter::Bash,
            "sh" => Interpreter::Sh,
            "python3" => Interpreter::Python3,
            _ => return None,
        })
    }
}

/// An action's environment: names to values, ordered by name. A sorted vector, not a
/// `BTreeMap`: an action has a few variables, and a B-tree leaf is allocated for eleven
/// (about 900 bytes for one variable; 10,000 actions held 8 MB of them). Read and written
/// as a mapping, like the map it replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvMap(Vec<(String, EnvValue)>);

impl EnvMap {
    pub fn new() -> EnvMap {
        EnvMap(Vec::new())
    }
    pub fn get(&self, name: &str) -> Option<&EnvValue> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok().map(|i| &self.0[i].1)
    }
    /// Sets `name`, returning the value it replaces.
    pub fn insert(&mut self, name: String, value: EnvValue) -> Option<EnvValue> {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &EnvValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }
    pub fn values(&self) -> impl ExactSizeIterator<Item = &EnvValue> {
        self.0.iter().map(|(_, v)| v)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, EnvValue)> for EnvMap {
    /// The last value of a repeated name wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, EnvValue)>>(iter: I) -> EnvMap {
        let mut v: Vec<(String, EnvValue)> = iter.into_iter().collect();
        // Stable: equal names keep their order, and the last of them is kept below.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, EnvValue)> = Vec::with_capacity(v.len());
        for (k, val) in v {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = val,
                _ => out.push((k, val)),
            }
        }
        out.shrink_to_fit();
        EnvMap(out)
    }
}

impl From<BTreeMap<String, EnvValue>> for EnvMap {
    fn from(m: BTreeMap<String, EnvValue>) -> EnvMap {
        let mut v: Vec<(String, EnvValue)> = m.into_iter().collect();
        v.shrink_to_fit();
        EnvMap(v)
    }
}

impl<'a> IntoIterator for &'a EnvMap {
    type Item = (&'a String, &'a EnvValue);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, EnvValue)>,
        fn(&'a (String, EnvValue)) -> (&'a String, &'a EnvValue),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl std::ops::Index<&str> for EnvMap {
    type Output = EnvValue;
    fn index(&self, name: &str) -> &EnvValue {
        self.get(name).unwrap_or_else(|| panic!("no environment variable `{name}`"))
    }
}

impl Serialize for EnvMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for EnvMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, EnvValue>::deserialize(d).map(EnvMap::from)
    }
}

/// An environment value: plain text, or a reference to a secret resolved at start time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvValue {
    Plain(String),
    Secret(Named),
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Plain(String),
            Secret { secret: String },
        }
        Ok(match Wire::deserialize(d)? {
            Wire::Plain(v) => EnvValue::Plain(v),
            Wire::Secret { secret } => EnvValue::Secret(Named::new(secret)),
        })
    }
}

impl Serialize for EnvValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            EnvValue::Plain(v) => s.serialize_str(v),
            EnvValue::Secret(n) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("secret", &n.name)?;
                m.end()
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    Always,
    #[default]
    OnFailure,
    Never,
}

impl RestartMode {
    pub const NAMES: [&'static str; 3] = ["always", "on-failure", "never"];
    /// The word files and the CLI use (`NAMES` is in variant order).
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
    pub fn parse(s: &str) -> Option<RestartMode> {
        Some(match s {
            "always" => RestartMode::Always,
            "on-failure" => RestartMode::OnFailure,
            "never" => RestartMode::Never,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    pub policy: RestartMode,
    pub delay: Dur,
    pub max_delay: Dur,
    /// 0 = unlimited.
    pub max_retries: u32,
}

impl Default for Restart {
    fn default() -> Self {
        Restart { policy: RestartMode::OnFailure, delay: Dur::secs(1), max_delay: Dur::secs(60), max_retries: 0 }
    }
}

/// The POSIX signals an operator may name. Numbers are not accepted: they differ by platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Kill,
    Usr1,
    Usr2,
    #[default]
    Term,
}

impl Signal {
    pub const NAMES: [&'static str; 7] = ["SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM"];
    /// Accepts `SIGTERM` and `TERM`, any case.
    pub fn parse(s: &str) -> Option<Signal> {
        let up = s.to_ascii_uppercase();
        let bare = up.strip_prefix("SIG").unwrap_or(&up);
        Some(match bare {
            "HUP" => Signal::Hup,
            "INT" => Signal::Int,
            "QUIT" => Signal::Quit,
            "KILL" => Signal::Kill,
            "USR1" => Signal::Usr1,
            "USR2" => Signal::Usr2,
            "TERM" => Signal::Term,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Kill => "SIGKILL",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Term => "SIGTERM",
        }
    }
    /// The Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Term => 15,
        }
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Signal::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown signal `{s}`")))
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub signal: Signal,
    pub timeout: Dur,
}

impl Default for Stop {
    fn default() -> Self {
        Stop { signal: Signal::Term, timeout: Dur::secs(10) }
    }
}

/// What a health check probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// The path exists and accepts a connection.
    UnixSocket(String),
    /// An HTTP GET answers 2xx, over a Unix socket or TCP.
    Http(HttpCheck),
    /// `host:port` accepts a TCP connection.
    Tcp(String),
    /// A command exits 0 (run by `sh -c`).
    Exec(String),
    /// The hero three-socket convention (SPEC 5.4).
    HeroSockets(bool),
}

impl Probe {
    pub const KINDS: [&'static str; 5] = ["unix_socket", "http", "tcp", "exec", "hero_sockets"];
}

/// A health check; a service is healthy when all of its main action's checks pass. Until
/// then the checks are readiness probes; afterwards each is probed again every `period`
/// so status stays true, and one with `liveness` restarts the service after that many
/// failures in a row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    // Flattened so the stored JSON of an older action (`{"tcp": ...}`) still reads.
    #[serde(flatten)]
    pub probe: Probe,
    /// How often the check is probed once the service was healthy ([`HealthCheck::DEFAULT_PERIOD`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Liveness>,
}

impl HealthCheck {
    pub const DEFAULT_PERIOD: Dur = Dur::secs(10);

    /// The interval between probes after the service was healthy: the liveness period
    /// when the check has one, else `period`, else 10 s.
    pub fn interval(&self) -> Dur {
        match (&self.liveness, self.period) {
            (Some(l), _) => l.period,
            (None, Some(p)) => p,
            (None, None) => Self::DEFAULT_PERIOD,
        }
    }
}

impl From<Probe> for HealthCheck {
    fn from(probe: Probe) -> Self {
        HealthCheck { probe, period: None, liveness: None }
    }
}

/// Restart a service that was healthy once when its check fails `failures` times in a row,
/// probed every `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub period: Dur,
    pub failures: u32,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness { period: Dur::secs(10), failures: 3 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub path: String,
}

/// An action: what to run and how. Equality ignores `pos` (see [`PartialEq`] below).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Action {
    pub name: String,
    pub context: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub interpreter: Interpreter,
    pub script: String,
    #[serde(default, skip_serializing_if = "EnvMap::is_empty")]
    pub env: EnvMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    pub process: bool,
    pub restart: Restart,
    pub stop: Stop,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthCheck>,
    /// Where the process serves its own metrics (`GET /metrics/services` federates them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<HttpCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Named>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Run as this account (SPEC 3.1); the daemon must be root. Resolved at start time,
    /// on the host that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Primary group instead of the user's own (needs `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip)]
    pub pos: Pos,
}

// Equality is what the reconciler diffs on: the same object written on another line is
// the same object. Destructuring (no `..`) makes a new field a compile error here.
impl PartialEq for Action {
    fn eq(&self, o: &Self) -> bool {
        let Action {
            name,
            context,
            description,
            interpreter,
            script,
            env,
            cwd,
            process,
            restart,
            stop,
            timeout,
            health,
            metrics,
            depends_on,
            schedule,
            tags,
            user,
            group,
            pos: _,
        } = self;
        *name == o.name
            && *context == o.context
            && *description == o.description
            && *interpreter == o.interpreter
            && *script == o.script
            && *env == o.env
            && *cwd == o.cwd
            && *process == o.process
            && *restart == o.restart
            && *stop == o.stop
            && *timeout == o.timeout
            && *health == o.health
            && *metrics == o.metrics
            && *depends_on == o.depends_on
            && *schedule == o.schedule
            && *tags == o.tags
            && *user == o.user
            && *group == o.group
    }
}
impl Eq for Action {}

impl PartialEq for Service {
    fn eq(&self, o: &Self) -> bool {
        let Service { name, context, description, status, actions, requires, after, pos: _ } = self;
        *name == o.name
            && *context == o.context
            && *description == o.description
            && *status == o.status
            && *actions == o.actions
            && *requires == o.requires
            && *after == o.after
    }
}
impl Eq for Service {}

impl Action {
    pub fn key(&self) -> ObjectKey {
        ObjectKey { kind: Kind::Action, context: self.context.clone(), name: self.name.clone() }
    }
    /// Names of the secrets this action's environment refers to.
    pub fn secret_refs(&self) -> impl Iterator<Item = &Named> {
        self.env.values().filter_map(|v| match v {
            EnvValue::Secret(n) => Some(n),
            EnvValue::Plain(_) => None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServiceStatus {
    /// Keep it running.
    #[default]
    Start,
    /// Keep it stopped.
    Stop,
    /// Registered but neither started nor stopped by hero_proc.
    Ignore,
}

impl ServiceStatus {
    pub const NAMES: [&'static str; 3] = ["start", "stop", "ignore"];
    /// The word files and the CLI use (`NAMES` is in variant order).
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
    pub fn parse(s: &str) -> Option<ServiceStatus> {
        Some(match s {
            "start" => ServiceStatus::Start,
            "stop" => ServiceStatus::Stop,
            "ignore" => ServiceStatus::Ignore,
            _ => return None,
        })
    }
}

/// A service: actions run in order, the last one supervised. Equality ignores `pos`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub context: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: ServiceStatus,
    pub actions: Vec<Named>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Named>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<Named>,
    #[serde(skip)]
    pub pos: Pos,
}

impl Service {
    pub fn key(&self) -> ObjectKey {
        ObjectKey { kind: Kind::Service, context: self.context.clone(), name: self.name.clone() }
    }
}

/// Retention of job and run history (SPEC 5.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub max_age_days: u64,
    pub max_rows_per_table: u64,
    pub compact_every: Dur,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age_days: 30, max_rows_per_table: 100_000, compact_every: Dur::secs(3600) }
    }
}

/// `hero.yaml` `registry:`: where artifacts come from (SPEC 3.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// A Forgejo generic package registry (`https://HOST/api/packages/OWNER/generic`) or
    /// `file:///dir` with the same layout; no trailing `/`.
    pub url: String,
    /// A secret of context `core`, sent as `Authorization: token ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Named>,
    /// Versions kept per artifact name for offline rollback.
    pub keep: u32,
    /// A download that receives nothing for this long fails (and connecting may take
    /// no longer).
    pub timeout: Dur,
}

impl Registry {
    pub const DEFAULT_KEEP: u32 = 3;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

/// `hero.yaml` `forgejo:`: where the daemon posts a commit status after each sync
/// (SPEC 3.4). `url` (`https://HOST/api/v1`) and `repo` (`OWNER/NAME`) are derived from
/// an https:// repository URL when left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgejo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// A secret of context `core`, sent as `Authorization: token ...`.
    pub token: Named,
}

/// `hero.yaml`: repository-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub required_services: Vec<Named>,
    pub self_heal: bool,
    pub prune: bool,
    pub interval: Dur,
    pub retention: Retention,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<Registry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgejo: Option<Forgejo>,
    /// The keys the file sets (`interval`, `retention.max_age_days`, ...): a key it
    /// leaves out keeps the built-in default, and status says `default` for it, not the
    /// revision.
    #[serde(default)]
    pub given: std::collections::BTreeSet<String>,
}

impl Settings {
    /// Whether `hero.yaml` sets `key` (dotted for nested keys: `retention.compact_every`).
    pub fn is_given(&self, key: &str) -> bool {
        self.given.contains(key)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            required_services: vec![Named::new("hero_db")],
            self_heal: true,
            prune: true,
            interval: Dur::secs(60),
            retention: Retention::default(),
            registry: None,
            forgejo: None,
            given: Default::default(),
        }
    }
}

/// What `secrets/<context>.sops.yaml` tells without its key: names and recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretsFile {
    pub context: String,
    pub path: String,
    /// Top-level key names, in file order, with where each is written.
    pub keys: Vec<Named>,
    /// The age recipients the file is encrypted to.
    pub age_recipients: Vec<String>,
    /// The raw file, for the reconciler to decrypt at apply time.
    pub raw: Vec<u8>,
}

/// A migration script: `<version>_<description>.rhai`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub name: String,
    pub path: String,
    /// SHA-256 of the file, hex; an applied migration must never change.
    pub sha256: String,
    pub source: String,
}

/// The actions and services of one layer (the base tree or one host overlay). Objects are
/// shared (`Arc`): the parse cache, every merged [`DesiredState`] and every cached
/// revision hold the same copy of an object that did not change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectSet {
    pub actions: Vec<Arc<Action>>,
    pub services: Vec<Arc<Service>>,
    /// Objects whose name was read but which had errors: references to them are not
    /// reported again as unknown.
    pub broken: Vec<ObjectKey>,
    /// Where actions of this set run an artifact (SPEC 3.6), for `validate`.
    pub artifacts: Vec<crate::artifact::ArtifactUse>,
}

/// Everything read from a config repository.
#[derive(Clone, Debug, Default)]
pub struct ConfigTree {
    pub settings: Settings,
    pub base: ObjectSet,
    /// Per-host overlays by host name.
    pub hosts: BTreeMap<String, ObjectSet>,
    /// Secrets files by context.
    pub secrets: BTreeMap<String, SecretsFile>,
    /// In application order.
    pub migrations: Vec<Migration>,
    /// `artifacts.lock` (empty and not `present` when the file is absent).
    pub lock: crate::artifact::ArtifactLock,
    /// Whether the tree has a `hero.yaml` (without one, every setting is a default).
    pub has_settings_file: bool,
}

/// The effective desired state on one host: base objects, replaced or extended by the
/// host's overlay, keyed for lookup.
#[derive(Clone, Debug, Default)]
pub struct DesiredState {
    pub actions: BTreeMap<(String, String), Arc<Action>>,
    pub services: BTreeMap<(String, String), Arc<Service>>,
    /// See [`ObjectSet::broken`].
    pub broken: std::collections::BTreeSet<ObjectKey>,
}

impl ConfigTree {
    /// Merge the base set with the overlay of `host` (if any): same key replaces, new adds.
    /// The objects are shared with the tree, not copied.
    pub fn desired_for(&self, host: Option<&str>) -> DesiredState {
        let overlay = host.and_then(|h| self.hosts.get(h));
        let sets = || std::iter::once(&self.base).chain(overlay);
        // Collected, not inserted one by one: `from_iter` sorts once and builds the tree in
        // bulk, keeping the last of equal keys (the overlay's, or a duplicate's second).
        DesiredState {
            actions: sets()
                .flat_map(|s| &s.actions)
                .map(|a| ((a.context.clone(), a.name.clone()), a.clone()))
                .collect(),
            services: sets()
                .flat_map(|s| &s.services)
                .map(|s| ((s.context.clone(), s.name.clone()), s.clone()))
                .collect(),
            broken: sets().flat_map(|s| s.broken.iter().cloned()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment behaves as the map it replaced: ordered by name, the last of a
    /// repeated name wins, written and read as a JSON/YAML mapping; and it holds no more
    /// than its entries (the point of it).
    #[test]
    fn env_map_is_an_ordered_map_in_a_tight_vector() {
        let mut env = EnvMap::new();
        assert_eq!(env.insert("B".into(), EnvValue::Plain("2".into())), None);
        assert_eq!(env.insert("A".into(), EnvValue::Secret(Named::new("tok"))), None);
        assert_eq!(env.insert("B".into(), EnvValue::Plain("3".into())), Some(EnvValue::Plain("2".into())));
        assert_eq!(env.keys().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(env["B"], EnvValue::Plain("3".into()));
        assert!(env.contains_key("A") && !env.contains_key("C") && env.get("C").is_none());
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(json, r#"{"A":{"secret":"tok"},"B":"3"}"#);
        let back: EnvMap = serde_json::from_str(r#"{"B":"3","A":{"secret":"tok"}}"#).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.0.capacity(), back.0.len());
        let collected: EnvMap = [("Z", "1"), ("Y", "2"), ("Z", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), EnvValue::Plain(v.into())))
            .collect();
        assert_eq!(
            collected.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>(),
            ["Y=Plain(\"2\")", "Z=Plain(\"3\")"]
        );
        assert_eq!(collected.0.capacity(), 2);
    }

    #[test]
    fn each_word_parses_back_to_its_variant() {
        for i in [Interpreter::Exec, Interpreter::Bash, Interpreter::Sh, Interpreter::Python3] {
            assert_eq!(Interpreter::parse(i.name()), Some(i));
        }
        for m in [RestartMode::Always, RestartMode::OnFailure, RestartMode::Never] {
            assert_eq!(RestartMode::parse(m.name()), Some(m));
        }
        for st in [ServiceStatus::Start, ServiceStatus::Stop, ServiceStatus::Ignore] {
            assert_eq!(ServiceStatus::parse(st.name()), Some(st));
        }
    }

    /// The store keeps objects as JSON of these types: what goes in must come back equal.
    #[test]
    fn objects_round_trip_through_json() {
        let mut env = BTreeMap::new();
        env.insert("A".to_owned(), EnvValue::Plain("1".into()));
        env.insert("T".to_owned(), EnvValue::Secret(Named::new("tok")));
        let a = Action {
            name: "web".into(),
            context: "core".into(),
            description: Some("d".into()),
            interpreter: Interpreter::Bash,
            script: "echo hi".into(),
            env: env.into(),
            cwd: Some("~/x".into()),
            process: true,
            restart: Restart {
                policy: RestartMode::Always,
                delay: Dur(Duration::from_millis(500)),
                max_delay: Dur::secs(90),
                max_retries: 3,
            },
            stop: Stop { signal: Signal::Int, timeout: Dur::secs(5) },
            timeout: None,
            health: vec![
                Probe::UnixSocket("/s".into()).into(),
                HealthCheck {
                    probe: Probe::Http(HttpCheck {
                        socket: None,
                        url: Some("http://127.0.0.1:1".into()),
                        path: "/h".into(),
                    }),
                    period: Some(Dur::secs(3)),
                    liveness: Some(Liveness { period: Dur::secs(2), failures: 4 }),
                },
                Probe::Tcp("127.0.0.1:1".into()).into(),
                Probe::Exec("true".into()).into(),
                Probe::HeroSockets(true).into(),
            ],
            metrics: Some(HttpCheck { socket: Some("/m.sock".into()), url: None, path: "/metrics".into() }),
            depends_on: vec![Named::new("prep")],
            schedule: None,
            tags: vec!["t".into()],
            user: Some("hero".into()),
            group: Some("hero".into()),
            pos: Pos::default(),
        };
        let json = serde_json::to_string(&a).unwrap();
        let back: Action = serde_json::from_str(&json).unwrap();
        assert_eq!(a, back);
        // A check stored before checks had `period` and `liveness` still reads.
        let old: HealthCheck = serde_json::from_str(r#"{"tcp":"127.0.0.1:1"}"#).unwrap();
        assert_eq!(old, HealthCheck::from(Probe::Tcp("127.0.0.1:1".into())));
        let s = Service {
            name: "web".into(),
            context: "core".into(),
            description: None,
            status: ServiceStatus::Stop,
            actions: vec![Named::new("web")],
            requires: vec![],
            after: vec![Named::new("core/hero_db")],
            pos: Pos::default(),
        };
        let back: Service = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(s, back);
        // Where an object is written is not part of what it is.
        let mut moved = a.clone();
        moved.pos = Pos { file: "actions/other.yaml".into(), line: 9, col: 3 };
        assert_eq!(a, moved);
    }
}
