//! Durations as an SRE writes them: `"500ms"`, `"30s"`, `"2m"`, `"1h30m"`,
//! or a TOML integer of seconds. One format, parsed here and printed here,
//! so `backstop manifest check --json` prints what the file may say.

use std::fmt::Write as _;
use std::time::Duration;

/// Parse `"1h30m"`, `"30s"`, `"250ms"`: one or more `<digits><unit>`
/// pieces, units `h`, `m`, `s`, `ms`, each at most once and in that order.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];
    if text.is_empty() {
        return Err("empty duration (write e.g. \"30s\")".into());
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration (write e.g. \"30s\", \"2m\", \"500ms\")"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let Some(i) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!(
                "{text:?} is not a duration: unit {unit:?} is not one of h, m, s, ms"
            ));
        };
        if i < next_unit {
            return Err(format!("{text:?}: units must go h, m, s, ms, each once"));
        }
        next_unit = i + 1;
        total_ms = n
            .checked_mul(UNITS[i].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("{text:?}: too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// The shortest text [`parse_duration`] reads back as `d` (to the
/// millisecond; a manifest's durations have no finer part).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

/// serde for a `Duration` field: the text form in human-readable formats
/// (JSON, as the store keeps a manifest), the native `(secs, nanos)` pair
/// in postcard, which is compact and needs no parsing on the agent.
pub mod serde_human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            super::format_duration(*d).serialize(s)
        } else {
            d.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            super::parse_duration(&text).map_err(serde::de::Error::custom)
        } else {
            Duration::deserialize(d)
        }
    }
}

/// [`serde_human`] for an optional duration.
pub mod serde_human_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[expect(clippy::ref_option, reason = "serde's `with` calls serialize(&T, S)")]
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            d.map(super::format_duration).serialize(s)
        } else {
            d.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        if d.is_human_readable() {
            match Option::<String>::deserialize(d)? {
                Some(text) => super::parse_duration(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        } else {
            Option::<Duration>::deserialize(d)
        }
    }
}
