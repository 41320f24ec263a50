//! The trainer's own tests.

use super::*;

#[test]
fn a_model_of_another_schema_is_refused() {
    let dir = std::env::temp_dir().join(format!("backstop-model-{}", std::process::id()));
    let all = corpus::synthetic(5, 4, 4);
    let cfg = TrainConfig {
        epochs: 1,
        ..Default::default()
    };
    let m = train(&all, &all, &cfg, "x".into()).unwrap();
    m.save(&dir).unwrap();
    assert!(Model::load(&dir).is_ok());
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    meta["schema"] = "backstop.features.v0".into();
    std::fs::write(dir.join("model.json"), meta.to_string()).unwrap();
    let e = Model::load(&dir).err().unwrap().to_string();
    assert!(e.contains("v0") && e.contains("retrain"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_records_its_window_length_and_refuses_a_mixed_corpus() {
    let mut all = corpus::synthetic(4, 4, 4);
    let cfg = TrainConfig {
        epochs: 1,
        ..Default::default()
    };
    let m = train(&all, &all, &cfg, "x".into()).unwrap();
    assert_eq!(m.meta.window_ms, Some(all[0].window_ms));
    all[2].window_ms = 250;
    let e = train(&all, &all, &cfg, "x".into())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("mixes window lengths") && e.contains(&all[2].id) && e.contains("250 ms"),
        "{e}"
    );
}

#[test]
fn the_current_model_is_the_fleets_and_predicts_as_saved() {
    let data = std::env::temp_dir().join(format!("backstop-current-{}", std::process::id()));
    let all = corpus::synthetic(4, 4, 4);
    let cfg = TrainConfig {
        epochs: 1,
        ..Default::default()
    };
    let m = train(&all, &all, &cfg, "x".into()).unwrap();
    m.save(&data.join("models/current")).unwrap();
    let (back, source) = Model::current(&data).unwrap();
    assert!(source.contains("models/current"), "{source}");
    assert_eq!(
        m.predict(&all[1].windows).unwrap(),
        back.predict(&all[1].windows).unwrap()
    );
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn training_is_deterministic() {
    let all = corpus::synthetic(9, 6, 6);
    let cfg = TrainConfig {
        epochs: 2,
        ..Default::default()
    };
    let dirs: Vec<_> = (0..2)
        .map(|i| std::env::temp_dir().join(format!("backstop-det-{i}-{}", std::process::id())))
        .collect();
    for d in &dirs {
        train(&all, &all, &cfg, "x".into())
            .unwrap()
            .save(d)
            .unwrap();
    }
    let a = std::fs::read(dirs[0].join("model.safetensors")).unwrap();
    let b = std::fs::read(dirs[1].join("model.safetensors")).unwrap();
    assert!(a == b, "two trainings with one seed differ");
    for d in dirs {
        std::fs::remove_dir_all(d).unwrap();
    }
}
