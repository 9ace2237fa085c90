//! Images cannot be built here (no container engine), so this checks that what
//! `Dockerfile.operator` names exists: the package and binary, the ports the operator
//! listens on, the non-root user, and a build that can run offline from the lock file.

const DOCKERFILE: &str = include_str!("../../Dockerfile.operator");
const DEPLOYMENT: &str = include_str!("../../config/operator/deployment.yaml");
const CARGO_TOML: &str = include_str!("../Cargo.toml");
const MAIN_RS: &str = include_str!("../src/main.rs");

#[test]
fn builds_the_operator_binary_statically() {
    assert!(CARGO_TOML.contains("name = \"vouchrs-operator\""));
    assert!(DOCKERFILE.contains("-p vouchrs-operator"));
    assert!(DOCKERFILE.contains("--target x86_64-unknown-linux-musl"));
    assert!(DOCKERFILE.contains("--locked"));
    assert!(
        DOCKERFILE.contains("release/vouchrs-operator "),
        "copies the binary the package builds"
    );
    assert!(DOCKERFILE.contains("ENTRYPOINT [\"/usr/local/bin/vouchrs-operator\"]"));
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).exists());
}

#[test]
fn runs_non_root_on_an_empty_base() {
    assert!(DOCKERFILE.contains("FROM scratch"));
    assert!(DOCKERFILE.contains("USER 1000:1000"));
    for line in [
        "runAsUser: 1000",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "- ALL",
    ] {
        assert!(
            DEPLOYMENT.contains(line),
            "operator Deployment lacks {line}"
        );
    }
}

#[test]
fn ports_and_command_match_the_cli() {
    assert!(DOCKERFILE.contains("EXPOSE 8080"));
    assert!(
        MAIN_RS.contains("default_value = \"0.0.0.0:8080\""),
        "admin port default changed"
    );
    assert!(DOCKERFILE.contains("CMD [\"run\"]"));
    assert!(DEPLOYMENT.contains("containerPort: 8080"));
    for path in ["/livez", "/readyz"] {
        assert!(DEPLOYMENT.contains(path));
    }
}
