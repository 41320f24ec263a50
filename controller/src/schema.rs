//! The feature schema as an SRE reads it: `backstop schema`.

use std::fmt::Write as _;

use backstop_common::features::{FEATURES, SCHEMA_VERSION};

/// The schema as JSON: `{"schema": VERSION, "features": [{"index","name","unit","help"}]}`.
pub fn to_json() -> serde_json::Value {
    let features: Vec<_> = FEATURES
        .iter()
        .enumerate()
        .map(|(i, f)| serde_json::json!({"index": i, "name": f.name, "unit": f.unit, "help": f.help}))
        .collect();
    serde_json::json!({"schema": SCHEMA_VERSION, "features": features})
}

/// The schema as an aligned table.
pub fn to_table() -> String {
    let width = FEATURES.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let mut out = format!(
        "schema {SCHEMA_VERSION} ({} features, in window order)\n\n",
        FEATURES.len()
    );
    for (i, f) in FEATURES.iter().enumerate() {
        writeln!(out, "{i:>3}  {:<width$}  {:<6}  {}", f.name, f.unit, f.help)
            .expect("writing to a String cannot fail");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_table_list_every_feature_in_order() {
        let j = to_json();
        let list = j["features"].as_array().unwrap();
        assert_eq!(list.len(), FEATURES.len());
        assert_eq!(list[0]["name"], FEATURES[0].name);
        assert_eq!(list[3]["index"], 3);
        let table = to_table();
        for f in FEATURES {
            assert!(table.contains(f.name), "table lacks {}", f.name);
        }
    }
}
