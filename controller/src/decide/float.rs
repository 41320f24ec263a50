//! Serde for numbers that may not be finite, so stored evidence replays.
//!
//! JSON has no NaN or infinity: serde_json writes them as `null`, which
//! reads back as an error for an `f64` (one NaN latency sample would make
//! a whole deployment's evidence unreadable) and as `None` for an
//! `Option<f64>` (a NaN shadow score, which blocks a commit, would replay
//! as no score, which does not). In human-readable formats they are
//! written as the strings "NaN", "inf" and "-inf"; binary formats (postcard)
//! keep the bits as they are.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Text {
    Num(f64),
    Word(String),
}

fn to_text(v: f64) -> Text {
    if v.is_nan() {
        Text::Word("NaN".into())
    } else if v == f64::INFINITY {
        Text::Word("inf".into())
    } else if v == f64::NEG_INFINITY {
        Text::Word("-inf".into())
    } else {
        Text::Num(v)
    }
}

fn from_text<E: serde::de::Error>(t: Text) -> Result<f64, E> {
    match t {
        Text::Num(v) => Ok(v),
        Text::Word(w) => match w.as_str() {
            "NaN" => Ok(f64::NAN),
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            other => Err(E::custom(format!(
                "`{other}` is not a number (nor NaN, inf, -inf)"
            ))),
        },
    }
}

/// `#[serde(with = "float::any")]` on an `f64`.
pub mod any {
    use super::*;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            to_text(*v).serialize(s)
        } else {
            v.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        if d.is_human_readable() {
            from_text(Text::deserialize(d)?)
        } else {
            f64::deserialize(d)
        }
    }
}

/// `#[serde(with = "float::option")]` on an `Option<f64>`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            v.map(to_text).serialize(s)
        } else {
            v.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        if d.is_human_readable() {
            Option::<Text>::deserialize(d)?.map(from_text).transpose()
        } else {
            Option::<f64>::deserialize(d)
        }
    }
}

/// `#[serde(with = "float::vec")]` on a `Vec<f64>`.
pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_seq(v.iter().map(|x| to_text(*x)))
        } else {
            v.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        if d.is_human_readable() {
            Vec::<Text>::deserialize(d)?
                .into_iter()
                .map(from_text)
                .collect()
        } else {
            Vec::<f64>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct Probe {
        #[serde(with = "super::any")]
        a: f64,
        #[serde(with = "super::option")]
        b: Option<f64>,
        #[serde(with = "super::vec")]
        c: Vec<f64>,
    }

    #[test]
    fn non_finite_numbers_survive_json() {
        let v = Probe {
            a: f64::NAN,
            b: Some(f64::INFINITY),
            c: vec![1.5, f64::NEG_INFINITY, f64::NAN],
        };
        let json = serde_json::to_string(&v).expect("serialises");
        assert_eq!(json, r#"{"a":"NaN","b":"inf","c":[1.5,"-inf","NaN"]}"#);
        let w: Probe = serde_json::from_str(&json).expect("reads back");
        assert!(w.a.is_nan() && w.b == Some(f64::INFINITY));
        assert_eq!(w.c[..2], [1.5, f64::NEG_INFINITY]);
        assert!(w.c[2].is_nan());
        let none: Probe = serde_json::from_str(r#"{"a":0.25,"b":null,"c":[]}"#).expect("reads");
        assert_eq!((none.a, none.b), (0.25, None));
        let bad = serde_json::from_str::<Probe>(r#"{"a":"lots","b":null,"c":[]}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("`lots` is not a number")
        );
    }
}
