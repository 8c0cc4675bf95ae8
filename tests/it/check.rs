//! `dermaga check`: offline validation of port maps, through the binary, with exit codes. It
//! must judge as the gateway does: the same loader (duplicates, file rules, size limit), both
//! port maps, the same entry rules.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dermaga::Protocol;
use dermaga::fixture::{Fixture, PortMap, port, port_map, service};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dermaga"))
        .args(args)
        .env_remove("DERMAGA_UDP_SERVICES_CONFIGMAP")
        .env_remove("DERMAGA_TCP_SERVICES_CONFIGMAP")
        .env_remove("DERMAGA_CONFIG_MAX_BYTES")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_with(flags: &[&str], files: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["check".to_owned()];
    args.extend(flags.iter().map(|f| f.to_string()));
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        args.push(path.to_str().unwrap().to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, _) = run(&args);
    (code, out)
}

fn check(files: &[(&str, &str)]) -> (i32, String) {
    check_with(&[], files)
}

/// Two good entries, one with PROXY.
fn good_map() -> PortMap {
    port_map("dermaga", "tcp-services")
        .entry("10000", "default/web:80")
        .entry("2222", "git/ssh:22:PROXY")
}

fn udp_map(key: &str, value: &str) -> String {
    port_map("dermaga", "udp-services").entry(key, value).yaml()
}

#[test]
fn a_good_map_passes() {
    let (code, out) = check(&[("map.yaml", &good_map().yaml())]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("2 entries in dermaga/tcp-services checked: 0 error(s), 0 warning(s)"),
        "{out}"
    );
}

#[test]
fn every_bad_entry_is_printed_with_key_and_value_and_fails() {
    let bad = port_map("dermaga", "tcp-services")
        .entry("10000", "default/web:80")
        .entry("0", "default/web:80")
        .entry("10001", "web:80")
        .entry("10002", "default/web:80:FOO")
        .entry("10254", "default/web:80")
        .yaml();
    let (code, out) = check(&[("map.yaml", &bad)]);
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
fn an_unknown_option_is_a_warning_as_the_gateway_serves_the_port() {
    let map = good_map().entry("10000.note", "owned by team x").yaml();
    let (code, out) = check(&[("map.yaml", &map)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#"warning: ConfigMap dermaga/tcp-services: entry "10000.note": "owned by team x": unknown per-port option "note""#), "{out}");
    assert!(
        out.contains("3 entries in dermaga/tcp-services checked: 0 error(s), 1 warning(s)"),
        "{out}"
    );
}

#[test]
fn unresolved_references_warn_when_services_are_given() {
    let svc = service("default", "web").port(port(8080)).yaml();
    let (code, out) = check(&[("map.yaml", &good_map().yaml()), ("svc.yaml", &svc)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: port 10000/TCP -> default/web:80: Service default/web has no TCP port 80 (it has: 8080/TCP)"), "{out}");
    assert!(
        out.contains("warning: port 2222/TCP -> git/ssh:22:PROXY: Service git/ssh not found"),
        "{out}"
    );
}

#[test]
fn a_duplicate_object_fails_check_and_the_gateway_alike() {
    let first = good_map().yaml();
    let second = good_map().entry("10000", "default/other:80").yaml();
    let text = format!("{first}{second}");
    let message =
        "ConfigMap dermaga/tcp-services repeats document 1; an object may appear only once";
    let (code, out) = check(&[("dup.yaml", &text)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("dup.yaml: document 2: {message}")),
        "{out}"
    );

    // The gateway refuses the same file at start with the same words.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.yaml");
    std::fs::write(&path, &text).unwrap();
    let (code, _, err) = run(&[
        "--config",
        path.to_str().unwrap(),
        "--admin-address",
        "127.1.14.1:0",
        "--listen-address",
        "127.1.14.1",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("dup.yaml: document 2: {message}")),
        "{err}"
    );

    // Across the files of one check, the same rule.
    let (code, out) = check(&[("a.yaml", &first), ("b.yaml", &second)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("b.yaml: document 1: ConfigMap dermaga/tcp-services repeats ")
            && out.contains("a.yaml: document 1; an object may appear only once"),
        "{out}"
    );
}

#[test]
fn the_udp_map_is_checked_by_its_flag_or_by_its_usual_name_with_a_warning() {
    let udp = udp_map("53", "kube-system/kube-dns:dns:PROXY");
    let text = good_map().yaml() + &udp;
    let proxy_error = r#"error: ConfigMap dermaga/udp-services: entry "53": "kube-system/kube-dns:dns:PROXY": PROXY protocol is only supported for TCP ports"#;

    let (code, out) = check(&[("maps.yaml", &text)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(proxy_error), "{out}");
    assert!(out.contains("warning: ConfigMap dermaga/udp-services is checked as the UDP port map, but the gateway reads it only when started with --udp-services-configmap dermaga/udp-services"), "{out}");
    assert!(
        out.contains("3 entries in dermaga/tcp-services, dermaga/udp-services checked: 1 error(s), 1 warning(s)"),
        "{out}"
    );

    let flag = ["--udp-services-configmap", "dermaga/udp-services"];
    let (code, out) = check_with(&flag, &[("maps.yaml", &text)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(proxy_error), "{out}");
    assert!(!out.contains("warning:"), "{out}");

    // A map named by a flag but not in the input: the gateway's warning, not an error.
    let (code, out) = check_with(&flag, &[("map.yaml", &good_map().yaml())]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: ConfigMap dermaga/udp-services does not exist"),
        "{out}"
    );
}

#[test]
fn no_port_map_in_the_input_fails_and_says_which_names_are_read() {
    let my_ports = port_map("dermaga", "my-ports")
        .entry("10000", "default/web:80")
        .yaml();
    let (code, out) = check(&[("map.yaml", &my_ports)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: no port map in the input: the gateway reads ConfigMap dermaga/tcp-services (--tcp-services-configmap), and the input has ConfigMap dermaga/my-ports"),
        "{out}"
    );
    let (code, out) = check_with(
        &["--tcp-services-configmap", "dermaga/my-ports"],
        &[("map.yaml", &my_ports)],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(&[("bad.yaml", "apiVersion: v1\nkind: ConfigMap\ndata: [1, 2\n")]);
    assert_eq!(code, 1);
    assert!(
        out.contains("bad.yaml: document 1: not valid YAML"),
        "{out}"
    );
}

#[test]
fn a_mapped_port_missing_from_the_load_balancer_service_is_a_warning() {
    let lb = service("dermaga", "dermaga")
        .service_type("LoadBalancer")
        .port(port(10000).named("tcp-10000").target_number(10000))
        .port(
            port(22)
                .named("ssh")
                .target_number(2222)
                .protocol(Protocol::Tcp),
        )
        .port(port(53).named("dns").protocol(Protocol::Tcp))
        .yaml();
    let udp = udp_map("53", "kube-system/kube-dns:dns");
    let map = good_map().entry("20000", "default/web:80").yaml();
    let (code, out) = check_with(
        &["--udp-services-configmap", "dermaga/udp-services"],
        &[("maps.yaml", &(map + &udp)), ("lb.yaml", &lb)],
    );
    assert_eq!(code, 0, "{out}");
    // The LoadBalancer Service alone does not make the references checked.
    assert!(!out.contains("not found"), "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("LoadBalancer")).collect();
    assert_eq!(
        warnings,
        [
            "warning: port 53/UDP is mapped but not on the LoadBalancer Service dermaga/dermaga: clients cannot reach it until it is added to the Service's ports (protocol UDP, targetPort 53)",
            "warning: port 20000/TCP is mapped but not on the LoadBalancer Service dermaga/dermaga: clients cannot reach it until it is added to the Service's ports (protocol TCP, targetPort 20000)",
        ],
        "{out}"
    );
}

/// With `--manage-service-ports` the gateway adds the mapped ports to that Service itself:
/// nothing to warn about.
#[test]
fn a_managed_load_balancer_service_needs_no_port_by_hand() {
    let lb = service("dermaga", "dermaga")
        .service_type("LoadBalancer")
        .port(port(10000).named("tcp-10000").target_number(10000))
        .yaml();
    let map = good_map().entry("20000", "default/web:80").yaml();
    let files = [("map.yaml", map.as_str()), ("lb.yaml", lb.as_str())];
    let (code, out) = check_with(&[], &files);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("20000/TCP is mapped but not on the LoadBalancer"),
        "{out}"
    );
    let (code, out) = check_with(&["--manage-service-ports", "dermaga/dermaga"], &files);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("LoadBalancer"), "{out}");
}

#[test]
fn files_are_read_as_the_gateway_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils) is installed");
    assert!(made.success());
    let zero = dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let big = dir.path().join("big.yaml");
    let good = good_map().yaml();
    std::fs::write(&big, good.clone() + &"#\n".repeat(1024)).unwrap();
    let map = dir.path().join("map.yaml");
    std::fs::write(&map, &good).unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();

    let started = Instant::now();
    let (code, out, _) = run(&[
        "check",
        "--config-max-bytes",
        "1KiB",
        &path(&fifo),
        &path(&zero),
        &path(&big),
        &path(&map),
    ]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(code, 1, "{out}");
    for line in [
        format!("error: {} is a FIFO, not a regular file", path(&fifo)),
        format!(
            "error: {} is a character device, not a regular file",
            path(&zero)
        ),
        format!(
            "error: {} is {} bytes, more than --config-max-bytes 1024; it was not read",
            path(&big),
            good.len() + 2048
        ),
        "2 entries in dermaga/tcp-services checked: 3 error(s)".to_owned(),
    ] {
        assert!(out.contains(&line), "missing {line}\nin:\n{out}");
    }
}

#[test]
fn exit_codes_are_those_of_the_table() {
    // 0: no error; 1: an error (above); 2: the command line.
    assert_eq!(check(&[("map.yaml", &good_map().yaml())]).0, 0);
    let (code, _, err) = run(&["check"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["check", "--config-max-bytes", "lots", "x.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--config-max-bytes"), "{err}");
    let (code, _, err) = run(&["check", "--config-max-bytes", "2GiB", "x.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("out of range: 1KiB to 1GiB"), "{err}");
    let (code, out, _) = run(&["check", "/nonexistent/map.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: cannot read /nonexistent/map.yaml: No such file or directory"),
        "{out}"
    );
}
