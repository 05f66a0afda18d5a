//! Scalar typing and text forms exactly as sops (Go, `gopkg.in/yaml.v3`)
//! produces them.
//!
//! Why this matters: the SOPS MAC hashes every leaf in Go's canonical text
//! (`strconv.Itoa`, `FormatFloat(f, 'f', -1, 64)`, `True`/`False`, RFC 3339
//! nanoseconds for timestamps), including leaves stored in clear. A plaintext
//! `port_unencrypted: 0x1F` is hashed as `31`, so we must type scalars the way
//! yaml.v3 does or honest files would be refused.

use base64::Engine;

use crate::yaml::{Scalar, ScalarTag};

/// A scalar typed the way sops sees it after loading the YAML.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Time(GoTime),
    Str(String),
}

/// Why a scalar cannot be typed (no value text inside, on purpose).
pub(crate) type ResolveError = &'static str;

/// Types a scalar like yaml.v3 decoding into `interface{}`, plus sops 3.10+'s
/// treatment of timestamps as times.
pub(crate) fn resolve_scalar(s: &Scalar) -> Result<Resolved, ResolveError> {
    match &s.tag {
        Some(ScalarTag::Other) => Ok(Resolved::Str(s.text.clone())),
        Some(ScalarTag::Core(name)) => resolve_tagged(name, &s.text),
        None if s.is_quoted() => Ok(Resolved::Str(s.text.clone())),
        None => resolve_plain(&s.text, true),
    }
}

fn resolve_tagged(tag: &str, text: &str) -> Result<Resolved, ResolveError> {
    match tag {
        "str" => Ok(Resolved::Str(text.to_string())),
        "binary" => {
            let cleaned: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(cleaned.as_bytes())
                .map_err(|_| "a !!binary value that is not valid base64")?;
            String::from_utf8(bytes).map(Resolved::Str).map_err(|_| "a !!binary value that is not UTF-8 text")
        }
        "null" => match resolve_plain(text, false)? {
            Resolved::Null => Ok(Resolved::Null),
            _ => Err("tagged !!null but is not null"),
        },
        "bool" => match resolve_plain(text, false)? {
            r @ Resolved::Bool(_) => Ok(r),
            _ => Err("tagged !!bool but is not a boolean"),
        },
        "int" => match resolve_plain(text, false)? {
            r @ Resolved::Int(_) => Ok(r),
            _ => Err("tagged !!int but is not an integer"),
        },
        "float" => match resolve_plain(text, false)? {
            r @ Resolved::Float(_) => Ok(r),
            Resolved::Int(i) => Ok(Resolved::Float(i as f64)),
            _ => Err("tagged !!float but is not a number"),
        },
        "timestamp" => {
            parse_yaml_timestamp(text).map(Resolved::Time).ok_or("tagged !!timestamp but is not a timestamp")
        }
        _ => Err("a scalar with an unsupported YAML core tag"),
    }
}

/// yaml.v3's `resolve()` for an untagged plain scalar.
fn resolve_plain(text: &str, allow_time: bool) -> Result<Resolved, ResolveError> {
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Resolved::Null,
        "true" | "True" | "TRUE" => Resolved::Bool(true),
        "false" | "False" | "FALSE" => Resolved::Bool(false),
        ".nan" | ".NaN" | ".NAN" => Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Resolved::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Resolved::Float(f64::NEG_INFINITY),
        _ => resolve_plain_other(text, allow_time)?,
    })
}

fn resolve_plain_other(text: &str, allow_time: bool) -> Result<Resolved, ResolveError> {
    let Some(&first) = text.as_bytes().first() else {
        return Ok(Resolved::Null);
    };
    Ok(match first {
        b'.' => match go_parse_float(text) {
            Some(f) => Resolved::Float(f),
            None => Resolved::Str(text.to_string()),
        },
        b'0'..=b'9' | b'+' | b'-' => {
            if allow_time && let Some(t) = parse_yaml_timestamp(text) {
                return Ok(Resolved::Time(t));
            }
            let plain: String = text.chars().filter(|&c| c != '_').collect();
            if let Some(i) = go_parse_int_base0(&plain) {
                return match i {
                    IntParse::Signed(i) => Ok(Resolved::Int(i)),
                    // yaml.v3 yields uint64 here, a type sops cannot hash.
                    IntParse::Unsigned => Err("an integer above 2^63-1, which sops cannot process"),
                };
            }
            if is_yaml_style_float(&plain)
                && let Some(f) = go_parse_float(&plain)
            {
                return Ok(Resolved::Float(f));
            }
            Resolved::Str(text.to_string())
        }
        _ => Resolved::Str(text.to_string()),
    })
}

enum IntParse {
    Signed(i64),
    Unsigned,
}

/// Go's `strconv.ParseInt(s, 0, 64)` then `ParseUint(s, 0, 64)`.
fn go_parse_int_base0(s: &str) -> Option<IntParse> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(r) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        (16, r)
    } else if let Some(r) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        (8, r)
    } else if let Some(r) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        (2, r)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        if magnitude <= i64::MAX as u64 + 1 { Some(IntParse::Signed((magnitude as i64).wrapping_neg())) } else { None }
    } else if magnitude <= i64::MAX as u64 {
        Some(IntParse::Signed(magnitude as i64))
    } else {
        Some(IntParse::Unsigned)
    }
}

/// yaml.v3's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` for decimal input: out-of-range values
/// are errors there (so yaml.v3 keeps `1e400` a string), infinities and NaN
/// only when spelled out.
pub(crate) fn go_parse_float(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if matches!(body, "inf" | "infinity" | "nan") {
        if body == "nan" && s.len() != 3 {
            return None;
        }
        return s.parse::<f64>().ok().or(Some(if s.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY }));
    }
    if !s.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-')) {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    if f.is_infinite() { None } else { Some(f) }
}

/// Go's `strconv.ParseBool`.
pub(crate) fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.Atoi` on 64-bit platforms.
pub(crate) fn go_parse_int(s: &str) -> Option<i64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    if body.is_empty() || !body.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `strconv.FormatFloat(f, 'f', -1, 64)`: the MAC form.
pub(crate) fn go_format_float_f(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf".to_string() } else { "-Inf".to_string() }
    } else {
        // Rust's Display prints the shortest round-tripping digits without an
        // exponent, like Go's 'f' with precision -1.
        format!("{f}")
    }
}

/// `strconv.FormatFloat(f, 'g', -1, 64)` with yaml.v3's `.inf`/`.nan`: what
/// `sops -d` prints.
pub(crate) fn go_format_float_g(f: f64) -> String {
    if f.is_nan() {
        return ".nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf".to_string() } else { "-.inf".to_string() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".to_string() } else { "0".to_string() };
    }
    // `{:e}` gives the shortest round-tripping digits as d.ddddeX.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (head, tail) = digits.split_at(1);
        let frac = if tail.is_empty() { String::new() } else { format!(".{tail}") };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{head}{frac}e{esign}{:02}", exp.abs())
    } else {
        format!("{sign}{}", f.abs())
    }
}

/// A civil time with a fixed UTC offset, enough to reproduce Go's
/// `time.Parse` / `Format(time.RFC3339Nano)` round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GoTime {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    /// Offset east of UTC in minutes.
    offset_minutes: i32,
}

impl GoTime {
    /// `Format(time.RFC3339Nano)`: fraction with trailing zeros trimmed.
    pub(crate) fn rfc3339_nano(&self) -> String {
        let mut s = self.rfc3339_seconds();
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            s.push('.');
            s.push_str(frac.trim_end_matches('0'));
        }
        s.push_str(&self.offset_text());
        s
    }

    /// `Format(time.RFC3339)`: no fraction.
    pub(crate) fn rfc3339(&self) -> String {
        let mut s = self.rfc3339_seconds();
        s.push_str(&self.offset_text());
        s
    }

    fn rfc3339_seconds(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    fn offset_text(&self) -> String {
        if self.offset_minutes == 0 {
            "Z".to_string()
        } else {
            let sign = if self.offset_minutes < 0 { '-' } else { '+' };
            let m = self.offset_minutes.unsigned_abs();
            format!("{sign}{:02}:{:02}", m / 60, m % 60)
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    /// Reads between `min` and `max` ASCII digits.
    fn num(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.i;
        while self.i < self.b.len() && self.i - start < max && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        if self.i - start < min {
            return None;
        }
        std::str::from_utf8(&self.b[start..self.i]).ok()?.parse().ok()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }

    /// Optional `.ddd` (or `,ddd`) fraction; Go keeps 9 digits.
    fn fraction(&mut self) -> Option<u32> {
        let save = self.i;
        if (self.eat(b'.') || self.eat(b',')) && self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            let start = self.i;
            while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
                self.i += 1;
            }
            let digits = &self.b[start..self.i];
            let mut nanos: u32 = 0;
            for k in 0..9 {
                nanos = nanos * 10 + digits.get(k).map_or(0, |d| u32::from(d - b'0'));
            }
            return Some(nanos);
        }
        self.i = save;
        Some(0)
    }

    /// `Z` or `±hh:mm`.
    fn zone(&mut self) -> Option<i32> {
        if self.eat(b'Z') {
            return Some(0);
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return None;
        };
        let h = self.num(2, 2)?;
        if !self.eat(b':') {
            return None;
        }
        let m = self.num(2, 2)?;
        if h > 24 || m > 60 {
            return None;
        }
        Some(sign * (h as i32 * 60 + m as i32))
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        _ => 28,
    }
}

fn checked(t: GoTime) -> Option<GoTime> {
    let ok = (1..=12).contains(&t.month)
        && t.day >= 1
        && t.day <= days_in_month(t.year, t.month)
        && t.hour < 24
        && t.minute < 60
        && t.second < 60;
    ok.then_some(t)
}

/// yaml.v3's `parseTimestamp`: the layouts `2006-1-2T15:4:5.999999999Z07:00`
/// (`T` or `t`), `2006-1-2 15:4:5.999999999` (UTC) and `2006-1-2`.
pub(crate) fn parse_yaml_timestamp(s: &str) -> Option<GoTime> {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    let mut c = Cursor { b, i: 0 };
    let year = c.num(4, 4)?;
    c.eat(b'-');
    let month = c.num(1, 2)?;
    if !c.eat(b'-') {
        return None;
    }
    let day = c.num(1, 2)?;
    let mut t = GoTime { year, month, day, hour: 0, minute: 0, second: 0, nanos: 0, offset_minutes: 0 };
    if c.done() {
        return checked(t);
    }
    let with_zone = if c.eat(b'T') || c.eat(b't') {
        true
    } else if c.eat(b' ') {
        false
    } else {
        return None;
    };
    t.hour = c.num(1, 2)?;
    if !c.eat(b':') {
        return None;
    }
    t.minute = c.num(1, 2)?;
    if !c.eat(b':') {
        return None;
    }
    t.second = c.num(1, 2)?;
    t.nanos = c.fraction()?;
    if with_zone {
        t.offset_minutes = c.zone()?;
    }
    if !c.done() {
        return None;
    }
    checked(t)
}

/// Go's `time.Parse(time.RFC3339, s)` (used for `type:time` values and for
/// `sops.lastmodified`).
pub(crate) fn parse_rfc3339(s: &str) -> Option<GoTime> {
    let mut c = Cursor { b: s.as_bytes(), i: 0 };
    let year = c.num(4, 4)?;
    if !c.eat(b'-') {
        return None;
    }
    let month = c.num(2, 2)?;
    if !c.eat(b'-') {
        return None;
    }
    let day = c.num(2, 2)?;
    if !c.eat(b'T') {
        return None;
    }
    let hour = c.num(1, 2)?;
    if !c.eat(b':') {
        return None;
    }
    let minute = c.num(2, 2)?;
    if !c.eat(b':') {
        return None;
    }
    let second = c.num(2, 2)?;
    let nanos = c.fraction()?;
    let offset_minutes = c.zone()?;
    if !c.done() {
        return None;
    }
    checked(GoTime { year, month, day, hour, minute, second, nanos, offset_minutes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use saphyr_parser::ScalarStyle;

    fn plain(text: &str) -> Resolved {
        resolve_scalar(&Scalar { text: text.into(), style: ScalarStyle::Plain, tag: None }).unwrap()
    }

    #[test]
    fn plain_scalars_resolve_like_yaml_v3() {
        assert_eq!(plain("1_000"), Resolved::Int(1000));
        assert_eq!(plain("0777"), Resolved::Int(511));
        assert_eq!(plain("0x1F"), Resolved::Int(31));
        assert_eq!(plain("0o17"), Resolved::Int(15));
        assert_eq!(plain("0b101"), Resolved::Int(5));
        assert_eq!(plain("+12"), Resolved::Int(12));
        assert_eq!(plain("-0"), Resolved::Int(0));
        assert_eq!(plain("09"), Resolved::Float(9.0));
        assert_eq!(plain("1e3"), Resolved::Float(1000.0));
        assert_eq!(plain("1."), Resolved::Float(1.0));
        assert_eq!(plain(".5"), Resolved::Float(0.5));
        assert_eq!(plain("99999999999999999999"), Resolved::Float(1e20));
        assert_eq!(plain("1e400"), Resolved::Str("1e400".into()));
        assert_eq!(plain("yes"), Resolved::Str("yes".into()));
        assert_eq!(plain("True"), Resolved::Bool(true));
        assert_eq!(plain("~"), Resolved::Null);
        assert_eq!(plain("-"), Resolved::Str("-".into()));
        assert_eq!(plain("1.2.3"), Resolved::Str("1.2.3".into()));
        assert!(matches!(plain(".inf"), Resolved::Float(f) if f.is_infinite()));
        let big = Scalar { text: "18446744073709551615".into(), style: ScalarStyle::Plain, tag: None };
        assert!(resolve_scalar(&big).is_err());
        assert_eq!(plain("-9223372036854775808"), Resolved::Int(i64::MIN));
    }

    #[test]
    fn quoted_and_tagged_scalars() {
        let q = Scalar { text: "5".into(), style: ScalarStyle::DoubleQuoted, tag: None };
        assert_eq!(resolve_scalar(&q).unwrap(), Resolved::Str("5".into()));
        let t = Scalar { text: "5".into(), style: ScalarStyle::Plain, tag: Some(ScalarTag::Core("str".into())) };
        assert_eq!(resolve_scalar(&t).unwrap(), Resolved::Str("5".into()));
        let b =
            Scalar { text: "aGVsbG8=".into(), style: ScalarStyle::Plain, tag: Some(ScalarTag::Core("binary".into())) };
        assert_eq!(resolve_scalar(&b).unwrap(), Resolved::Str("hello".into()));
        let bad = Scalar { text: "abc".into(), style: ScalarStyle::Plain, tag: Some(ScalarTag::Core("int".into())) };
        assert!(resolve_scalar(&bad).is_err());
    }

    #[test]
    fn floats_format_like_go() {
        for (f, fmt_f, fmt_g) in [
            (0.1, "0.1", "0.1"),
            (3.0, "3", "3"),
            (1e21, "1000000000000000000000", "1e+21"),
            (1.5e-7, "0.00000015", "1.5e-07"),
            (123456789.125, "123456789.125", "1.23456789125e+08"),
            (100000.0, "100000", "100000"),
            (1e6, "1000000", "1e+06"),
            (0.0001, "0.0001", "0.0001"),
            (0.00001, "0.00001", "1e-05"),
            (-0.0, "-0", "-0"),
            (-2.5, "-2.5", "-2.5"),
            (1e100, &format!("1{}", "0".repeat(100)), "1e+100"),
        ] {
            assert_eq!(go_format_float_f(f), fmt_f, "f {f}");
            assert_eq!(go_format_float_g(f), fmt_g, "g {f}");
        }
        assert_eq!(go_format_float_f(f64::INFINITY), "+Inf");
        assert_eq!(go_format_float_g(f64::NEG_INFINITY), "-.inf");
        assert_eq!(go_format_float_f(f64::NAN), "NaN");
        assert_eq!(go_parse_float("+Inf"), Some(f64::INFINITY));
        assert!(go_parse_float("NaN").is_some_and(f64::is_nan));
        assert_eq!(go_parse_float("1e999"), None);
        assert_eq!(go_parse_float("0x10"), None);
    }

    #[test]
    fn timestamps_round_trip_like_go() {
        let t = |s: &str| parse_yaml_timestamp(s).map(|t| t.rfc3339_nano());
        assert_eq!(t("2001-12-14t21:59:43.10-05:00").as_deref(), Some("2001-12-14T21:59:43.1-05:00"));
        assert_eq!(t("2001-12-15 2:59:43.10").as_deref(), Some("2001-12-15T02:59:43.1Z"));
        assert_eq!(t("2002-12-14").as_deref(), Some("2002-12-14T00:00:00Z"));
        assert_eq!(t("2001-12-14T21:59:43.123456789+01:00").as_deref(), Some("2001-12-14T21:59:43.123456789+01:00"));
        assert_eq!(t("2001-12-14 21:59:43.10 -5"), None);
        assert_eq!(t("2001-02-30"), None);
        assert_eq!(t("2000-02-29").as_deref(), Some("2000-02-29T00:00:00Z"));
        assert_eq!(t("2001-12-14T21:59:43+00:00").as_deref(), Some("2001-12-14T21:59:43Z"));
        let lm = parse_rfc3339("2026-11-23T02:29:17.5+00:00").unwrap();
        assert_eq!(lm.rfc3339(), "2026-11-23T02:29:17Z");
        assert!(parse_rfc3339("2026-11-23 02:29:17Z").is_none());
    }

    #[test]
    fn bools_and_ints_parse_like_go() {
        assert_eq!(go_parse_bool("T"), Some(true));
        assert_eq!(go_parse_bool("yes"), None);
        assert_eq!(go_parse_int("+5"), Some(5));
        assert_eq!(go_parse_int("007"), Some(7));
        assert_eq!(go_parse_int("0x5"), None);
        assert_eq!(go_parse_int("99999999999999999999"), None);
    }
}
