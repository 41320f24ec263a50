//! Health probes in TOML: `type` picks the kind and which other fields
//! are allowed, so a `url` on a tcp probe is an unknown field, not
//! silently ignored.

use std::time::Duration;

use toml::Value;

use super::parse::{MS, argv};
use super::read::{Obj, Result, invalid, name};
use super::{Probe, ProbeKind};

pub(super) fn probe(path: &str, v: Value) -> Result<Probe> {
    const COMMON: [&str; 5] = ["name", "type", "interval", "timeout", "latency_budget"];
    let all: Vec<&str> = COMMON
        .iter()
        .chain(&["run", "addr", "url", "expect_status"])
        .copied()
        .collect();
    let mut o = Obj::open(path, v, &all)?;
    let probe_name = name(&o.field("name"), o.req_string("name")?)?;
    let type_field = o.field("type");
    let kind = match o.req_string("type")?.as_str() {
        "command" => {
            o.only(&[&COMMON[..], &["run"]].concat(), "a command probe")?;
            let (f, v) = o.req("run")?;
            ProbeKind::Command { run: argv(&f, v)? }
        }
        "tcp" => {
            o.only(&[&COMMON[..], &["addr"]].concat(), "a tcp probe")?;
            let addr = o.req_string("addr")?;
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    &o.field("addr"),
                    format!("{addr:?} is not IP:PORT (or [IPv6]:PORT)"),
                ));
            }
            ProbeKind::Tcp { addr }
        }
        "http" => {
            o.only(
                &[&COMMON[..], &["url", "expect_status"]].concat(),
                "an http probe",
            )?;
            let url = o.req_string("url")?;
            split_http_url(&url).map_err(|r| invalid(&o.field("url"), r))?;
            let expect_status = o.int("expect_status", 100, 599)?.unwrap_or(200) as u16;
            ProbeKind::Http { url, expect_status }
        }
        other => {
            return Err(invalid(
                &type_field,
                format!("{other:?} is not \"command\", \"tcp\" or \"http\""),
            ));
        }
    };
    let interval = o.duration(
        "interval",
        Duration::from_secs(5),
        Duration::from_millis(100),
    )?;
    let timeout = o.duration("timeout", Duration::from_secs(2).min(interval), MS)?;
    if timeout > interval {
        return Err(invalid(
            &o.field("timeout"),
            "longer than the probe's interval",
        ));
    }
    let budget_field = o.field("latency_budget");
    let latency_budget = o.opt_duration("latency_budget", MS)?;
    if latency_budget.is_some_and(|b| b > timeout) {
        return Err(invalid(
            &budget_field,
            "longer than the probe's timeout, which fails it first",
        ));
    }
    Ok(Probe {
        name: probe_name,
        kind,
        interval,
        timeout,
        latency_budget,
    })
}

/// The parts of a probe URL: host (as written, brackets kept for IPv6),
/// port (default 80) and the request target (default `/`). Only
/// `http://`: the agent has no TLS client, and a health endpoint is
/// local to the host.
pub fn split_http_url(url: &str) -> std::result::Result<(String, u16, String), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "{url:?}: only http:// URLs are probed (no https, no other scheme)"
        ));
    };
    if url.contains(|c: char| c.is_whitespace() || c.is_control()) || url.contains('#') {
        return Err(format!(
            "{url:?}: no whitespace, control characters or '#' fragment"
        ));
    }
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err(format!("{url:?}: no user info in a probe URL"));
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => {
            let port = authority[i + 1..]
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{url:?}: the port is not 1 to 65535"))?;
            (&authority[..i], port)
        }
        _ => (authority, 80),
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{url:?}: no host"));
    }
    Ok((host.to_string(), port, target))
}
