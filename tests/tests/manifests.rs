//! The manifests agree with the code: the rules ConfigMap carries the shipped default rules
//! verbatim, and the rules in it load. (Issue #2.)

use std::path::Path;

fn repo(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)).unwrap()
}

/// The block scalar under `key: |`, de-indented.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let indent = header.len() - header.trim_start().len() + 2;
    let mut out = String::new();
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        out.push_str(line.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    out
}

#[test]
fn the_rules_configmap_holds_the_default_rules_verbatim() {
    let configmap = repo("manifests/10-configmap-processor-rules.yaml");
    let rules = repo("processor/rules/default.yaml");
    assert!(
        block_scalar(&configmap, "rules.yaml") == rules,
        "manifests/10-configmap-processor-rules.yaml differs from processor/rules/default.yaml: run scripts/sync-configmap.sh"
    );
}

#[test]
fn the_forwarder_configmap_is_a_valid_forwarder_config() {
    let configmap = repo("manifests/11-configmap-forwarder.yaml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forwarder.yaml");
    std::fs::write(&path, block_scalar(&configmap, "forwarder.yaml")).unwrap();
    let config = sidecar_core::sink::ForwarderFile::load(&path).unwrap();
    assert_eq!(config.sinks.len(), 1);
    assert_eq!(config.report.interval.0, std::time::Duration::from_secs(60));
}

/// The processor gets its pod metadata from the Downward API (issue #5): the flag, the
/// environment and the podinfo volume are all in the Deployment, and no token is mounted.
#[test]
fn the_processor_gets_downward_api_metadata_without_a_token() {
    let deployment = repo("manifests/20-deployment.yaml");
    for needle in [
        "--kubernetes-metadata=downward",
        "--podinfo-dir=/etc/podinfo",
        "name: POD_SERVICE_ACCOUNT",
        "fieldPath: spec.serviceAccountName",
        "mountPath: /etc/podinfo",
        "fieldPath: metadata.labels",
        "fieldPath: metadata.annotations",
        "automountServiceAccountToken: false",
    ] {
        assert!(
            deployment.contains(needle),
            "20-deployment.yaml lacks {needle}"
        );
    }
}
