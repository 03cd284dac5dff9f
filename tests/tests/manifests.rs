//! The manifests agree with the code: the rules ConfigMap carries the shipped default rules
//! verbatim, and the rules in it load (issue #2); the exec probes check the files the apps
//! write (issue #12).

use std::path::Path;

use serde_json::{json, Value};

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
    // The rules file is the processor's ConfigMap, mounted at /etc/log-processor in the pod;
    // here, the same text from the repository.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../processor/rules/default.yaml");
    let text = block_scalar(&configmap, "forwarder.yaml");
    assert!(
        text.contains("rules_file: /etc/log-processor/rules.yaml"),
        "{text}"
    );
    let text = text.replace(
        "/etc/log-processor/rules.yaml",
        &rules.display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    let config = sidecar_core::sink::ForwarderFile::load(&path).unwrap();
    assert_eq!(config.sinks.len(), 1);
    assert_eq!(config.report.interval.0, std::time::Duration::from_secs(60));
    assert!(config.alerts.is_some());
    let deployment = repo("manifests/20-deployment.yaml");
    let forwarder = &deployment[deployment.find("- name: log-forwarder").unwrap()..];
    let forwarder = &forwarder[..forwarder.find("- name: log-processor").unwrap()];
    assert!(
        forwarder.contains("- name: processor-rules\n              mountPath: /etc/log-processor"),
        "the forwarder must mount the rules ConfigMap where alerts.rules_file points"
    );
}

/// The processor gets its pod metadata from the Downward API and the API server (issue #5):
/// the flag, the environment and the podinfo volume are in the Deployment.
#[test]
fn the_processor_gets_downward_api_and_api_server_metadata() {
    let deployment = repo("manifests/20-deployment.yaml");
    for needle in [
        "--kubernetes-metadata=api",
        "--podinfo-dir=/etc/podinfo",
        "name: POD_NAME",
        "fieldPath: metadata.name",
        "name: POD_SERVICE_ACCOUNT",
        "fieldPath: spec.serviceAccountName",
        "mountPath: /etc/podinfo",
        "fieldPath: metadata.labels",
        "fieldPath: metadata.annotations",
    ] {
        assert!(
            deployment.contains(needle),
            "20-deployment.yaml lacks {needle}"
        );
    }
}

fn yaml_documents(rel: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(&repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Least privilege for the API path: the service account may only get, list and watch pods
/// in its namespace; the pod mounts no token by default, and only the log-processor mounts
/// one (a projected, expiring token).
#[test]
fn only_the_processor_gets_a_token_and_it_may_only_read_pods() {
    let rbac = yaml_documents("manifests/05-rbac.yaml");
    let kind = |k: &str| {
        rbac.iter()
            .find(|doc| doc["kind"] == k)
            .unwrap_or_else(|| panic!("05-rbac.yaml has no {k}"))
    };
    assert_eq!(
        kind("ServiceAccount")["automountServiceAccountToken"],
        false
    );
    assert_eq!(
        kind("Role")["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}])
    );
    let binding = kind("RoleBinding");
    assert_eq!(binding["roleRef"]["name"], kind("Role")["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["name"],
        kind("ServiceAccount")["metadata"]["name"]
    );

    let deployment = &yaml_documents("manifests/20-deployment.yaml")[0];
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(
        spec["serviceAccountName"],
        kind("ServiceAccount")["metadata"]["name"]
    );
    let containers = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().unwrap());
    let token_volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            v["projected"]["sources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s.get("serviceAccountToken").is_some()))
        })
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(token_volumes.len(), 1, "{token_volumes:?}");
    let mounting: Vec<&str> = containers
        .filter(|c| {
            c["volumeMounts"].as_array().is_some_and(|mounts| {
                mounts
                    .iter()
                    .any(|m| token_volumes.contains(&m["name"].as_str().unwrap()))
            })
        })
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(mounting, ["log-processor"]);
}

/// The port-less apps' exec probes check the file the app writes (issue #12): the probe runs
/// the container's own binary, its `--check-heartbeat` names the container's `--heartbeat-file`,
/// and that file lies on an emptyDir the container mounts read-write (the root filesystem is
/// read-only) and outside /logs, where the collector would look.
#[test]
fn heartbeat_probes_check_the_file_their_app_writes() {
    let deployment = &yaml_documents("manifests/20-deployment.yaml")[0];
    let spec = &deployment["spec"]["template"]["spec"];
    let empty_dirs: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v.get("emptyDir").is_some())
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let mut probed = Vec::new();
    for container in spec["containers"].as_array().unwrap() {
        let name = container["name"].as_str().unwrap();
        for probe in ["livenessProbe", "readinessProbe"] {
            assert!(container.get(probe).is_some(), "{name} has no {probe}");
            let Some(command) = container[probe]["exec"]["command"].as_array() else {
                continue;
            };
            let command: Vec<&str> = command.iter().map(|a| a.as_str().unwrap()).collect();
            assert_eq!(command[0], container["command"][0], "{name} {probe}");
            let checked = command
                .iter()
                .find_map(|a| a.strip_prefix("--check-heartbeat="))
                .unwrap_or_else(|| panic!("{name} {probe}: no --check-heartbeat="));
            assert!(
                command.iter().any(|a| a.starts_with("--max-age=")),
                "{name} {probe}"
            );
            let written = container["args"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|a| a.as_str().unwrap().strip_prefix("--heartbeat-file="))
                .unwrap_or_else(|| panic!("{name}: no --heartbeat-file="));
            assert_eq!(checked, written, "{name} {probe}");
            assert!(!written.starts_with("/logs/"), "{name}: {written}");
            let mounted = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| {
                    written.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap()))
                        && empty_dirs.contains(&m["name"].as_str().unwrap())
                        && m.get("readOnly") != Some(&json!(true))
                });
            assert!(mounted, "{name}: {written} is on no writable emptyDir");
            probed.push(name);
        }
    }
    probed.dedup();
    assert_eq!(
        probed,
        ["database-client", "background-worker", "traffic-generator"]
    );
}
