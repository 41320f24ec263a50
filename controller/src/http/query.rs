//! The deployments list's filters, read from the query string. A value no
//! state or verdict is called, or a parameter the API does not know, is
//! refused with its name (400), never ignored: a typo in a filter would
//! otherwise show everything and look like an answer.

use crate::store::{DeployRow, DeployState};

/// The verdicts a decision can have (`decide::reason`), and "none" for a
/// deployment not decided yet.
const DECISIONS: [&str; 4] = ["rollback", "commit", "inconclusive", "none"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub parameter: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub state: Option<DeployState>,
    pub host: Option<String>,
    pub package: Option<String>,
    pub decision: Option<String>,
}

impl Filter {
    pub fn parse(query: Option<&str>) -> Result<Filter, QueryError> {
        let mut f = Filter::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k), decode(v));
            let bad = |reason: String| QueryError {
                parameter: k.clone(),
                reason,
            };
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "state" => {
                    let s = serde_json::from_value(serde_json::Value::String(v.clone()))
                        .map_err(|_| bad(format!("no state is called {v:?}")))?;
                    f.state = Some(s);
                }
                "host" => f.host = Some(v),
                "package" => f.package = Some(v),
                "decision" if DECISIONS.contains(&v.as_str()) => f.decision = Some(v),
                "decision" => {
                    return Err(bad(format!(
                        "no decision is called {v:?} (one of {})",
                        DECISIONS.join(", ")
                    )));
                }
                _ => {
                    return Err(bad(
                        "unknown parameter (state, host, package, decision)".into()
                    ));
                }
            }
        }
        Ok(f)
    }

    pub fn keeps_row(&self, row: &DeployRow) -> bool {
        self.state.is_none_or(|s| s == row.state)
            && self.host.as_ref().is_none_or(|h| *h == row.host)
            && self
                .package
                .as_ref()
                .is_none_or(|p| row.package.as_ref() == Some(p))
    }

    pub fn keeps_decision(&self, decision: Option<&str>) -> bool {
        match self.decision.as_deref() {
            None => true,
            Some("none") => decision.is_none(),
            Some(d) => decision == Some(d),
        }
    }
}

/// Percent-decoding (and `+` as a space), as browsers encode a form.
fn decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_their_values_and_name_a_bad_one() {
        let f = Filter::parse(Some("state=rolled_back&host=web%2D1&package=a+b")).unwrap();
        assert_eq!(f.state, Some(DeployState::RolledBack));
        assert_eq!(f.host.as_deref(), Some("web-1"));
        assert_eq!(f.package.as_deref(), Some("a b"));
        let e = Filter::parse(Some("state=gone")).unwrap_err();
        assert_eq!(e.parameter, "state");
        let e = Filter::parse(Some("decision=maybe")).unwrap_err();
        assert_eq!(e.parameter, "decision");
        let e = Filter::parse(Some("colour=red")).unwrap_err();
        assert_eq!(e.parameter, "colour");
        assert_eq!(Filter::parse(Some("state=")).unwrap(), Filter::default());
    }

    #[test]
    fn a_broken_escape_is_kept_as_text() {
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%3Cscript%3E"), "<script>");
    }
}
