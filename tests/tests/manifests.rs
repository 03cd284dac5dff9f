//! The manifests agree with the code: the rules ConfigMap carries the shipped default rules
//! verbatim, and the rules in it load (issue #2); the exec probes check the files the apps
//! write (issue #12); node mode (`manifests/node/`, issue #15) reads the kubelet's files
//! read-only, keeps its state on the node and may only read pods.

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
/// in its namespace; the pod mounts no token by default, and only the log-processor (its own
/// pod's metadata) and the log-forwarder (the pods of a selector query) mount one (a
/// projected, expiring token); the apps and the collector get none.
#[test]
fn only_the_processor_and_forwarder_get_a_token_and_it_may_only_read_pods() {
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
    let mut holders = token_mounting_containers(spec);
    holders.sort_unstable();
    assert_eq!(holders, ["log-forwarder", "log-processor"]);
}

/// Every container of a pod spec: the regular ones, then the init containers (native sidecars).
fn all_containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(move |key| spec[key].as_array().into_iter().flatten())
}

/// The containers of a pod spec that mount a service account token: the pod spec must have
/// exactly one volume that projects one.
fn token_mounting_containers(spec: &Value) -> Vec<&str> {
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
    all_containers(spec)
        .filter(|c| mounts(c).any(|m| token_volumes.contains(&m["name"].as_str().unwrap())))
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

/// A container's volume mounts.
fn mounts(container: &Value) -> impl Iterator<Item = &Value> {
    container["volumeMounts"].as_array().into_iter().flatten()
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

// Node mode: manifests/node/ (issue #15).

/// The node-mode DaemonSet and its pod spec.
fn node_daemonset() -> Value {
    let daemonset = yaml_documents("manifests/node/20-daemonset.yaml").remove(0);
    assert_eq!(daemonset["kind"], "DaemonSet");
    daemonset
}

/// The container of a pod spec with this name, regular or init.
fn container<'a>(spec: &'a Value, name: &str) -> &'a Value {
    all_containers(spec)
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// A container's `args` as strings.
fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// The pod volume named `name`.
fn volume<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// Least privilege in node mode: the pods of a node are in every namespace, so the processor's
/// service account is bound to a ClusterRole, which may only get, list and watch pods; the pod
/// mounts no token by default and only the log-processor and the log-forwarder mount one.
#[test]
fn node_mode_only_the_processor_and_forwarder_get_a_token_and_it_may_only_read_pods() {
    let rbac = yaml_documents("manifests/node/05-rbac.yaml");
    let kind = |k: &str| {
        rbac.iter()
            .find(|doc| doc["kind"] == k)
            .unwrap_or_else(|| panic!("node/05-rbac.yaml has no {k}"))
    };
    assert!(
        rbac.iter()
            .all(|doc| doc["kind"] != "Role" && doc["kind"] != "RoleBinding"),
        "node mode needs the pods of every namespace: a ClusterRole, and nothing else"
    );
    let account = kind("ServiceAccount");
    assert_eq!(account["automountServiceAccountToken"], false);
    assert_eq!(
        kind("ClusterRole")["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}])
    );
    let binding = kind("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        binding["roleRef"]["name"],
        kind("ClusterRole")["metadata"]["name"]
    );
    assert_eq!(
        binding["subjects"],
        json!([{
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }])
    );

    let daemonset = node_daemonset();
    let spec = &daemonset["spec"]["template"]["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["serviceAccountName"], account["metadata"]["name"]);
    let mut holders = token_mounting_containers(spec);
    holders.sort_unstable();
    assert_eq!(holders, ["log-forwarder", "log-processor"]);
}

/// The collector reads every container's CRI file from the node's /var/log/pods, mounted
/// read-only at the same path, and nothing else of the node; no other container sees it.
#[test]
fn node_mode_reads_the_kubelets_files_read_only() {
    let daemonset = node_daemonset();
    let spec = &daemonset["spec"]["template"]["spec"];
    let host_paths: Vec<(&str, &str)> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
        .collect();
    let pod_logs = host_paths
        .iter()
        .find(|(_, path)| *path == "/var/log/pods")
        .map(|(name, _)| *name)
        .expect("a hostPath volume of /var/log/pods");
    assert_eq!(volume(spec, pod_logs)["hostPath"]["type"], "Directory");
    for (name, path) in &host_paths {
        assert!(
            *name == pod_logs || path.starts_with("/var/lib/log-sidecars/"),
            "hostPath {path} ({name}): only /var/log/pods and state under /var/lib/log-sidecars/"
        );
    }

    let mut readers = Vec::new();
    for c in all_containers(spec) {
        for m in mounts(c).filter(|m| m["name"] == pod_logs) {
            let name = c["name"].as_str().unwrap();
            assert_eq!(m["readOnly"], true, "{name} mounts /var/log/pods writable");
            assert_eq!(m["mountPath"], "/var/log/pods", "{name}");
            readers.push(name);
        }
    }
    assert_eq!(readers, ["log-collector"]);

    let collector = container(spec, "log-collector");
    let watch: Vec<&str> = args(collector)
        .into_iter()
        .filter_map(|a| a.strip_prefix("--watch="))
        .collect();
    assert_eq!(watch, ["cri:/var/log/pods/*/*/*.log"]);
    // Its own output is left out, or the forwarder's report would be fed back into itself.
    let namespace = &yaml_documents("manifests/node/00-namespace.yaml")[0]["metadata"]["name"];
    let namespace = namespace.as_str().unwrap();
    assert!(
        args(collector)
            .contains(&format!("--exclude=/var/log/pods/{namespace}_*/*/*.log").as_str()),
        "{:?}",
        args(collector)
    );
}

/// The journals, the forwarder's checkpoint and the archive live on the node (hostPath,
/// created on first use), so a replaced pod resumes from the old one's commits; no stage
/// writes to an emptyDir. And only one pod per node at any time, since two would write the
/// same journals.
#[test]
fn node_mode_keeps_its_state_on_the_node() {
    let daemonset = node_daemonset();
    let spec = &daemonset["spec"]["template"]["spec"];
    let state = [
        ("log-collector", "--journal-dir=", "/collected-logs"),
        ("log-processor", "--journal-dir=", "/processed-logs"),
        ("log-processor", "--input-dir=", "/collected-logs"),
        ("log-forwarder", "--input-dir=", "/processed-logs"),
    ];
    for (name, flag, dir) in state {
        let c = container(spec, name);
        assert!(
            args(c).contains(&format!("{flag}{dir}").as_str()),
            "{name}: no {flag}{dir}"
        );
        let mount = mounts(c)
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{name} does not mount {dir}"));
        // Readers write their cursor into the journal they read (readers/).
        assert_ne!(mount["readOnly"], true, "{name}: {dir}");
        let host_path = &volume(spec, mount["name"].as_str().unwrap())["hostPath"];
        assert_eq!(host_path["type"], "DirectoryOrCreate", "{name}: {dir}");
        assert!(
            host_path["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/var/lib/log-sidecars/")),
            "{name}: {dir} is not on the node: {host_path}"
        );
    }
    assert!(
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.get("emptyDir").is_none()),
        "an emptyDir is deleted with the pod"
    );
    assert_eq!(
        daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"],
        0
    );
}

/// The processor takes the pod metadata from the path and a watch of its node's pods, so it
/// must know its node: NODE_NAME from the Downward API's spec.nodeName.
#[test]
fn node_mode_processor_knows_its_node() {
    let daemonset = node_daemonset();
    let spec = &daemonset["spec"]["template"]["spec"];
    let processor = container(spec, "log-processor");
    assert!(args(processor).contains(&"--kubernetes-metadata=node"));
    let node_name = processor["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("the processor has NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
}

/// Every namespaced object of node mode is in node mode's own namespace, and the ConfigMaps
/// the DaemonSet mounts are the ones in manifests/node/.
#[test]
fn node_mode_lives_in_its_own_namespace() {
    let namespace = yaml_documents("manifests/node/00-namespace.yaml").remove(0);
    assert_eq!(namespace["kind"], "Namespace");
    let namespace = &namespace["metadata"]["name"];
    assert_ne!(namespace, "logging-demo");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/node");
    let mut configmaps = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".yaml") {
            continue;
        }
        for doc in yaml_documents(&format!("manifests/node/{name}")) {
            let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
            if cluster_scoped.contains(&doc["kind"].as_str().unwrap()) {
                assert!(doc["metadata"].get("namespace").is_none(), "{name}");
            } else {
                assert_eq!(&doc["metadata"]["namespace"], namespace, "{name}");
            }
            if doc["kind"] == "ConfigMap" {
                configmaps.push(doc["metadata"]["name"].as_str().unwrap().to_owned());
            }
        }
    }
    let daemonset = node_daemonset();
    let spec = &daemonset["spec"]["template"]["spec"];
    for v in spec["volumes"].as_array().unwrap() {
        if let Some(name) = v["configMap"]["name"].as_str() {
            assert!(configmaps.iter().any(|c| c == name), "no ConfigMap {name}");
        }
    }
}

/// The node rules load and their own `tests:` pass, as `processor test` would run them.
#[test]
fn node_mode_rules_load_and_their_tests_pass() {
    let configmap = repo("manifests/node/10-configmap-processor-rules.yaml");
    let text = block_scalar(&configmap, "rules.yaml");
    let rules = sidecar_core::rules::RuleSet::check_yaml_str(&text, "node rules.yaml")
        .unwrap_or_else(|errors| panic!("{errors:#?}"));
    assert!(rules.tests().len() >= 4, "{}", rules.tests().len());
    let report = rules.run_tests();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.passed, rules.tests().len());
}

/// The node forwarder's ConfigMap is a valid config whose alerts read the node rules where the
/// forwarder mounts them, and whose archive is one stream of files (a node's sources grow with
/// every pod it ever ran).
#[test]
fn node_mode_forwarder_configmap_is_a_valid_forwarder_config() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        block_scalar(
            &repo("manifests/node/10-configmap-processor-rules.yaml"),
            "rules.yaml",
        ),
    )
    .unwrap();
    let text = block_scalar(
        &repo("manifests/node/11-configmap-forwarder.yaml"),
        "forwarder.yaml",
    );
    assert!(
        text.contains("rules_file: /etc/log-processor/rules.yaml"),
        "{text}"
    );
    let path = dir.path().join("forwarder.yaml");
    std::fs::write(
        &path,
        text.replace(
            "/etc/log-processor/rules.yaml",
            &rules.display().to_string(),
        ),
    )
    .unwrap();
    let config = sidecar_core::sink::ForwarderFile::load(&path).unwrap();
    assert!(config.alerts.is_some());
    let [sidecar_core::sink::SinkSpec::File {
        directory,
        per_source,
        max_closed_files,
        ..
    }] = config.sinks.as_slice()
    else {
        panic!("one file sink: {:?}", config.sinks)
    };
    assert!(!per_source);
    assert!(max_closed_files.is_some());

    let daemonset = node_daemonset();
    let spec = &daemonset["spec"]["template"]["spec"];
    let forwarder = container(spec, "log-forwarder");
    let mounted = |path: &Path| {
        mounts(forwarder).find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
    };
    assert!(
        mounted(directory.as_path()).is_some(),
        "the archive {} is on no mount",
        directory.display()
    );
    let rules_mount =
        mounted(Path::new("/etc/log-processor/rules.yaml")).expect("the rules are mounted");
    assert_eq!(rules_mount["name"], "processor-rules");
    assert_eq!(
        volume(spec, "processor-rules")["configMap"]["name"],
        "log-processor-rules"
    );
}
