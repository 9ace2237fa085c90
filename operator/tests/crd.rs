//! The CRD in `crds/` is exactly what the Rust types generate, and its schema stays within
//! the rules the issue sets: structural, documented, no unsigned formats, no `null` in enums,
//! conditions as a list-map keyed by `type`.
//!
//! To regenerate: `cargo run -p vouchrs-operator -- crd > crds/vouchrsgateway.yaml`.

use serde_json::Value;
use vouchrs_operator::render;

const CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/vouchrsgateway.yaml");

#[test]
fn crd_file_matches_the_rust_types() {
    let on_disk = std::fs::read_to_string(CRD_FILE).unwrap();
    assert!(
        on_disk == render::crd_yaml(),
        "crds/vouchrsgateway.yaml is stale: run `cargo run -p vouchrs-operator -- crd > crds/vouchrsgateway.yaml`"
    );
}

fn schema() -> Value {
    let crd = serde_json::to_value(render::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Calls `f(path, node)` on every schema node.
fn walk(path: &str, node: &Value, f: &mut impl FnMut(&str, &Value)) {
    f(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(&format!("{path}.{name}"), child, f);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, f);
    }
}

#[test]
fn schema_is_small_structural_and_documented() {
    let mut problems = Vec::new();
    walk("", &schema(), &mut |path, node| {
        if path.starts_with(".metadata") {
            return;
        }
        if let Some(format) = node.get("format").and_then(Value::as_str)
            && format.starts_with("uint")
        {
            problems.push(format!("{path}: unsigned format {format}"));
        }
        if node
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| e.contains(&Value::Null))
        {
            problems.push(format!("{path}: null in enum"));
        }
        for banned in ["anyOf", "oneOf", "allOf", "$ref"] {
            if node.get(banned).is_some() {
                problems.push(format!("{path}: {banned} is not structural"));
            }
        }
        if node.get("type").is_none() && !path.is_empty() {
            problems.push(format!("{path}: no type"));
        }
        if !path.is_empty() && !path.ends_with("[]") && node.get("description").is_none() {
            problems.push(format!("{path}: no description for kubectl explain"));
        }
        if node.get("x-kubernetes-preserve-unknown-fields").is_some() {
            problems.push(format!("{path}: preserves unknown fields"));
        }
    });
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
}

#[test]
fn names_columns_and_subresources() {
    let crd = serde_json::to_value(render::crd()).unwrap();
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "vouchrs.app");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["shortNames"], serde_json::json!(["vgw"]));
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("priority").is_none())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Tier", "Ready", "Replicas", "Age"]);
}

#[test]
fn cross_field_rules_are_in_the_schema() {
    let text = serde_json::to_string(&render::crd()).unwrap();
    for rule in [
        "self.minReplicas <= self.maxReplicas",
        "isURL(self)",
        "self.refreshHours <= self.durationHours",
        "self.matches('^https?://",
    ] {
        assert!(text.contains(rule), "missing CEL rule {rule}");
    }
}

const PASSKEY_CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/vouchrspasskey.yaml");

#[test]
fn passkey_crd_file_matches_the_rust_types() {
    let on_disk = std::fs::read_to_string(PASSKEY_CRD_FILE).unwrap();
    assert!(
        on_disk == render::passkey_crds_yaml(),
        "crds/vouchrspasskey.yaml is stale: run `cargo run -p vouchrs-operator -- crd --passkeys > crds/vouchrspasskey.yaml`"
    );
}

#[test]
fn passkey_crds_are_namespaced_documented_and_show_their_columns() {
    let [passkey, invitation] = render::passkey_crds().map(|c| serde_json::to_value(c).unwrap());
    for (crd, plural) in [
        (&passkey, "vouchrspasskeys"),
        (&invitation, "vouchrsinvitations"),
    ] {
        let spec = &crd["spec"];
        assert_eq!(spec["group"], "vouchrs.app");
        assert_eq!(spec["scope"], "Namespaced");
        assert_eq!(spec["names"]["plural"], plural);
        assert_eq!(spec["versions"][0]["name"], "v1alpha1");
        let mut problems = Vec::new();
        let schema = &spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        walk(".spec", schema, &mut |path, node| {
            if node.get("description").is_none() && !path.ends_with("[]") {
                problems.push(format!("{plural}{path}: no description"));
            }
            for banned in ["anyOf", "oneOf", "allOf", "$ref"] {
                if node.get(banned).is_some() {
                    problems.push(format!("{plural}{path}: {banned} is not structural"));
                }
            }
        });
        assert!(problems.is_empty(), "{problems:#?}");
    }
    let version = &passkey["spec"]["versions"][0];
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["User", "Passkey", "Created", "Last Used"]);
    // The webauthn-rs blob is the only opaque part of the schema.
    let props = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(
        props["passkey"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    assert_eq!(props["created"]["format"], "date-time");
}
