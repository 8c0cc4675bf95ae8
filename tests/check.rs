//! `dermaga check`: offline validation of port maps, with exit codes.

use std::process::Command;

fn check(files: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["check".to_owned()];
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        args.push(path.to_str().unwrap().to_owned());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dermaga"))
        .args(&args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const GOOD_MAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: tcp-services, namespace: dermaga}
data:
  "10000": "default/web:80"
  "2222": "git/ssh:22:PROXY"
"#;

#[test]
fn a_good_map_passes() {
    let (code, out) = check(&[("map.yaml", GOOD_MAP)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("2 entries in dermaga/tcp-services checked: 0 error(s), 0 warning(s)"),
        "{out}"
    );
}

#[test]
fn every_bad_entry_is_printed_with_key_and_value_and_fails() {
    let bad = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: tcp-services, namespace: dermaga}
data:
  "10000": "default/web:80"
  "0": "default/web:80"
  "10001": "web:80"
  "10002": "default/web:80:FOO"
  "10254": "default/web:80"
"#;
    let (code, out) = check(&[("map.yaml", bad)]);
    assert_eq!(code, 1, "{out}");
    for line in [
        r#"error: ConfigMap dermaga/tcp-services: entry "0": "default/web:80": port 0 cannot be listened on"#,
        r#"error: ConfigMap dermaga/tcp-services: entry "10001": "web:80": "web" has no namespace"#,
        r#"error: ConfigMap dermaga/tcp-services: entry "10002": "default/web:80:FOO": unknown flag "FOO" in field 3"#,
        r#"error: ConfigMap dermaga/tcp-services: entry "10254": "default/web:80": port 10254 is reserved"#,
    ] {
        assert!(out.contains(line), "missing {line}\nin:\n{out}");
    }
    assert!(
        out.contains("5 entries in dermaga/tcp-services checked: 4 error(s)"),
        "{out}"
    );
}

#[test]
fn unresolved_references_warn_when_services_are_given() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {ports: [{port: 8080}]}\n";
    let (code, out) = check(&[("map.yaml", GOOD_MAP), ("svc.yaml", svc)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: port 10000/TCP -> default/web:80: Service default/web has no TCP port 80 (it has: 8080/TCP)"), "{out}");
    assert!(
        out.contains("warning: port 2222/TCP -> git/ssh:22:PROXY: Service git/ssh not found"),
        "{out}"
    );
}

#[test]
fn other_names_are_checked_as_port_maps_and_bad_yaml_fails() {
    let (code, out) = check(&[("map.yaml", &GOOD_MAP.replace("tcp-services", "my-ports"))]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("no ConfigMap named dermaga/tcp-services; checking every ConfigMap"),
        "{out}"
    );
    let (code, out) = check(&[("bad.yaml", "apiVersion: v1\nkind: ConfigMap\ndata: [1, 2\n")]);
    assert_eq!(code, 1);
    assert!(
        out.contains("bad.yaml: document 1: not valid YAML"),
        "{out}"
    );
}
