//! `render` works on every sample in `config/samples/`, through the real binary, and each
//! gives the children its tier calls for.

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vouchrs-operator");

fn samples() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    files.sort();
    files
}

fn kinds(yaml: &str) -> Vec<String> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| {
            let value: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
            value["kind"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn one_sample_per_tier() {
    let names: Vec<String> = samples()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for tier in vouchrs_operator::tier::Tier::ALL {
        assert!(
            names.contains(&tier.as_str().to_owned()),
            "no sample for {tier}"
        );
    }
}

#[test]
fn render_prints_every_child_of_every_sample() {
    for sample in samples() {
        let out = Command::new(BIN)
            .args(["render", "-f"])
            .arg(&sample)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            sample.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let kinds = kinds(&stdout);
        let base = [
            "Secret",
            "ConfigMap",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
        ];
        assert_eq!(&kinds[..7], base, "{}", sample.display());
        let development = sample.ends_with("development.yaml");
        assert_eq!(
            kinds.contains(&"HorizontalPodAutoscaler".to_owned()),
            !development,
            "{}",
            sample.display()
        );
        assert_eq!(
            kinds.contains(&"PodDisruptionBudget".to_owned()),
            !development,
            "{}",
            sample.display()
        );
        // The rendered proxy config is the proxy's own type, and it accepts it.
        let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&stdout)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let toml = docs[1]["data"]["proxy.toml"].as_str().unwrap();
        let config = vouchrs_proxy::config::ProxyConfig::parse(toml).unwrap();
        config.validate().unwrap();
    }
}

#[test]
fn render_reports_an_invalid_spec_and_fails() {
    let dir = std::env::temp_dir().join(format!("vouchrs-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    let sample = std::fs::read_to_string(samples()[0].clone()).unwrap();
    std::fs::write(
        &file,
        format!("{sample}  session:\n    cookieName: __Host-x\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["render", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cookieName"));
}

#[test]
fn crd_command_prints_the_checked_in_file() {
    let out = Command::new(BIN).arg("crd").output().unwrap();
    assert!(out.status.success());
    let on_disk = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/vouchrsgateway.yaml"
    ))
    .unwrap();
    assert_eq!(out.stdout, on_disk);
}
