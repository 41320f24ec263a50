//! Reading one TOML table field by field, with the field's full dotted
//! path in every error. Unknown keys are refused when a table is opened,
//! before any of its fields is read, so a misspelt optional field
//! (`timeot`) is reported as what it is rather than silently defaulted.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::{MAX_DURATION, MAX_STRING, ManifestError, parse_duration};

pub(super) type Result<T> = std::result::Result<T, ManifestError>;

pub(super) fn invalid(field: &str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A table being read: its path and the keys not yet taken.
pub(super) struct Obj {
    pub path: String,
    table: Table,
}

impl Obj {
    /// Open `value` (a table at `path`) whose keys must be among `known`.
    pub fn open(path: &str, value: Value, known: &[&str]) -> Result<Obj> {
        let Value::Table(table) = value else {
            return Err(invalid(
                path,
                format!("expected a table, found {}", kind(&value)),
            ));
        };
        let obj = Obj {
            path: path.to_string(),
            table,
        };
        obj.only(known, "")?;
        Ok(obj)
    }

    /// Refuse keys outside `known`; `what` says whose fields they are not.
    pub fn only(&self, known: &[&str], what: &str) -> Result<()> {
        if let Some(k) = self.table.keys().find(|k| !known.contains(&k.as_str())) {
            let of = if what.is_empty() {
                String::new()
            } else {
                format!(" of {what}")
            };
            return Err(invalid(
                &self.field(k),
                format!("unknown field{of} (known: {})", known.join(", ")),
            ));
        }
        Ok(())
    }

    /// The dotted path of `key` in this table.
    pub fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn take(&mut self, key: &str) -> Option<(String, Value)> {
        let v = self.table.remove(key)?;
        Some((self.field(key), v))
    }

    pub fn req(&mut self, key: &str) -> Result<(String, Value)> {
        let field = self.field(key);
        self.take(key)
            .ok_or_else(|| invalid(&field, "missing (this field is required)"))
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>> {
        self.take(key).map(|(f, v)| string(&f, v)).transpose()
    }

    pub fn req_string(&mut self, key: &str) -> Result<String> {
        let (f, v) = self.req(key)?;
        string(&f, v)
    }

    pub fn bool(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.take(key) {
            None => Ok(default),
            Some((_, Value::Boolean(b))) => Ok(b),
            Some((f, v)) => Err(invalid(
                &f,
                format!("expected true or false, found {}", kind(&v)),
            )),
        }
    }

    /// An integer in `min..=max`.
    pub fn int(&mut self, key: &str, min: i64, max: i64) -> Result<Option<i64>> {
        let Some((f, v)) = self.take(key) else {
            return Ok(None);
        };
        let Value::Integer(n) = v else {
            return Err(invalid(
                &f,
                format!("expected an integer, found {}", kind(&v)),
            ));
        };
        if n < min || n > max {
            return Err(invalid(&f, format!("{n} is outside {min} to {max}")));
        }
        Ok(Some(n))
    }

    /// A number (integer or float) in the range `ok` accepts, which says
    /// the range when it refuses.
    pub fn number(&mut self, key: &str, ok: fn(f64) -> bool, range: &str) -> Result<Option<f32>> {
        let Some((f, v)) = self.take(key) else {
            return Ok(None);
        };
        let x = match v {
            Value::Float(x) => x,
            Value::Integer(n) => n as f64,
            _ => {
                return Err(invalid(
                    &f,
                    format!("expected a number, found {}", kind(&v)),
                ));
            }
        };
        if !x.is_finite() || !ok(x) {
            return Err(invalid(&f, format!("{x} is outside {range}")));
        }
        Ok(Some(x as f32))
    }

    /// A duration in `min..=MAX_DURATION`, or `default` when absent.
    pub fn duration(&mut self, key: &str, default: Duration, min: Duration) -> Result<Duration> {
        Ok(self.opt_duration(key, min)?.unwrap_or(default))
    }

    pub fn opt_duration(&mut self, key: &str, min: Duration) -> Result<Option<Duration>> {
        let Some((f, v)) = self.take(key) else {
            return Ok(None);
        };
        let d = match v {
            Value::String(s) => parse_duration(&s).map_err(|r| invalid(&f, r))?,
            Value::Integer(n) if n >= 0 => Duration::from_secs(n as u64),
            _ => {
                let found = kind(&v);
                return Err(invalid(
                    &f,
                    format!("expected a duration like \"30s\", found {found}"),
                ));
            }
        };
        if d < min {
            return Err(invalid(
                &f,
                format!(
                    "{} is shorter than the least, {}",
                    super::format_duration(d),
                    super::format_duration(min)
                ),
            ));
        }
        if d > MAX_DURATION {
            return Err(invalid(
                &f,
                format!("{} is longer than the most, 24h", super::format_duration(d)),
            ));
        }
        Ok(Some(d))
    }

    /// An array of at most `max` values, each with its `[i]` path.
    pub fn array(&mut self, key: &str, max: usize) -> Result<Vec<(String, Value)>> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some((f, v)) => array(&f, v, max),
        }
    }
}

pub(super) fn array(field: &str, v: Value, max: usize) -> Result<Vec<(String, Value)>> {
    let Value::Array(items) = v else {
        return Err(invalid(
            field,
            format!("expected an array, found {}", kind(&v)),
        ));
    };
    if items.len() > max {
        return Err(invalid(
            field,
            format!("{} entries, over the limit of {max}", items.len()),
        ));
    }
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("{field}[{i}]"), v))
        .collect())
}

/// A string: no NUL byte, at most [`MAX_STRING`] bytes.
pub(super) fn string(field: &str, v: Value) -> Result<String> {
    let Value::String(s) = v else {
        return Err(invalid(
            field,
            format!("expected a string, found {}", kind(&v)),
        ));
    };
    if s.len() > MAX_STRING {
        return Err(invalid(
            field,
            format!("{} bytes, over the limit of {MAX_STRING}", s.len()),
        ));
    }
    if s.contains('\0') {
        return Err(invalid(field, "holds a NUL byte"));
    }
    Ok(s)
}

/// A name: 1-64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub(super) fn name(field: &str, s: String) -> Result<String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if s.is_empty() || s.len() > 64 {
        return Err(invalid(field, "must be 1 to 64 characters"));
    }
    if !s.chars().all(ok_char) || s.starts_with(['.', '-']) {
        return Err(invalid(
            field,
            format!("{s:?}: only letters, digits, '.', '_' and '-', not first '.' or '-'"),
        ));
    }
    Ok(s)
}

/// A path inside the root (a scope path): absolute, normalised (`.` and
/// empty components dropped, no trailing `/`). `..` is refused rather
/// than resolved: resolving it lexically is wrong wherever a symlink is on
/// the way, and a scope path that needs it is a mistake or an attempt to
/// reach outside the root.
pub(super) fn absolute(field: &str, text: &str) -> Result<PathBuf> {
    if !text.starts_with('/') {
        return Err(invalid(field, format!("{text:?} is not an absolute path")));
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(text).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(invalid(
                    field,
                    format!("{text:?} holds '..' (paths inside the root may not climb)"),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A cgroup beneath the cgroup v2 root (`monitor.service_cgroup`):
/// relative, normalised, at least one name, no `..`. The agent still
/// opens it beneath the root with no symlink followed; this refuses what
/// could never name a group there, before anything runs.
pub(super) fn cgroup_path(field: &str, text: &str) -> Result<PathBuf> {
    if text.starts_with('/') {
        return Err(invalid(
            field,
            format!(
                "{text:?} is absolute: name the group relative to the cgroup v2 root (e.g. \"system.slice/nginx.service\")"
            ),
        ));
    }
    let mut out = PathBuf::new();
    for c in Path::new(text).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(invalid(
                    field,
                    format!("{text:?} holds '..' (a cgroup path may not climb)"),
                ));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(invalid(
            field,
            "names no cgroup (the root is not a service)",
        ));
    }
    Ok(out)
}

/// A path on the agent's host (the root, the artifact): absolute, or
/// relative to `base` when the manifest came from a file; normalised, with
/// `..` resolved lexically (as `cd -L` does). Host paths are chosen by the
/// manifest's author and read by the agent before anything runs: `..`
/// there confines nothing, unlike inside the root.
pub(super) fn host_path(field: &str, text: &str, base: Option<&Path>) -> Result<PathBuf> {
    let joined = match base {
        _ if text.starts_with('/') => PathBuf::from(text),
        Some(b) if !text.is_empty() => b.join(text),
        _ => {
            return Err(invalid(
                field,
                format!(
                    "{text:?} is a relative path (write it absolute, or load the manifest from a file)"
                ),
            ));
        }
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// What a TOML value is, for "expected X, found Y".
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// serde's default for a switch that is on unless a stored value says off.
pub(super) fn on() -> bool {
    true
}
