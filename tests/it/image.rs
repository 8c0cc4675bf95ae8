//! The image without a Docker daemon: `image/build.sh` packs `image/rootfs.sh`'s file system
//! into an OCI layout with umoci, twice to the same digest; its files and configuration are the
//! Dockerfile's (whose last stage copies the same script's output into an empty image); and it
//! runs under runc, as user 65532 on a read-only root file system, the quick-start demo
//! answering `nc`.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::netns::NetNs;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command; its stdout, or a panic with its output.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (is it installed? .ci/run installs it): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `image/build.sh` of the test's dermaga binary into `layout`: the manifest digest.
fn build(layout: &Path) -> String {
    let script = repo().join("image/build.sh");
    let out = run(
        "bash",
        &[
            script.to_str().unwrap(),
            env!("CARGO_BIN_EXE_dermaga"),
            layout.to_str().unwrap(),
        ],
    );
    let digest = out.lines().last().unwrap_or_default().to_owned();
    assert!(digest.starts_with("sha256:"), "{out}");
    digest
}

/// Every path under `root` with its mode and owner: `path mode uid:gid`.
fn files(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.insert(format!(
                "/{rel} {:o} {}:{}",
                meta.permissions().mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// A blob of the layout by digest, as JSON.
fn blob(layout: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// The final stage of the Dockerfile, instruction by instruction.
fn dockerfile_final_stage() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines[last_from..].to_vec()
}

#[test]
fn the_daemonless_image_is_reproducible_is_the_dockerfiles_and_runs_under_runc() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let digest = build(&one);
    assert_eq!(build(&two), digest, "the same inputs give the same digest");
    println!("image digest {digest} (twice)");

    // The Dockerfile's last stage is the output of image/rootfs.sh in an empty image, with this
    // configuration.
    assert_eq!(
        dockerfile_final_stage(),
        [
            "FROM scratch",
            "COPY --from=rootfs /rootfs/ /",
            "EXPOSE 10254",
            "USER 65532:65532",
            "ENTRYPOINT [\"/dermaga\"]",
        ]
    );
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("RUN bash /rootfs.sh /dermaga /rootfs"));
    let index = blob_index(&one);
    let manifest = blob(&one, &index);
    let config = blob(&one, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"], json!(["/dermaga"]));
    assert_eq!(config["config"]["ExposedPorts"], json!({"10254/tcp": {}}));
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);

    // The files: what rootfs.sh makes (the Dockerfile's way) and what the layout holds.
    let rootfs = dir.path().join("rootfs");
    run(
        "bash",
        &[
            repo().join("image/rootfs.sh").to_str().unwrap(),
            env!("CARGO_BIN_EXE_dermaga"),
            rootfs.to_str().unwrap(),
        ],
    );
    let bundle = dir.path().join("bundle");
    let image = format!("{}:dermaga", one.display());
    run(
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    let (from_script, from_layout) = (files(&rootfs), files(&bundle.join("rootfs")));
    assert_eq!(from_layout, from_script);
    for expected in [
        "/dermaga 755 0:0",
        "/tmp 1777 0:0",
        "/etc/passwd 644 0:0",
        "/etc/ssl/certs/ca-certificates.crt 644 0:0",
        "/lib/x86_64-linux-gnu/libc.so.6 755 0:0",
    ] {
        assert!(
            from_layout.contains(expected),
            "{expected} not in {from_layout:#?}"
        );
    }
    println!("{} paths in the image", from_layout.len());

    // Run it: runc, user 65532, read-only root, a tmpfs /tmp, the test's network namespace.
    let config_path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    spec["process"]["args"] = json!(["/dermaga", "demo"]);
    spec["process"]["terminal"] = json!(false);
    spec["root"]["readonly"] = json!(true);
    spec["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                      "options": ["nosuid", "nodev", "mode=1777", "size=16m"]}),
    );
    let namespaces = spec["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|n| n["type"] != "network");
    std::fs::write(&config_path, spec.to_string()).unwrap();
    assert_eq!(spec["process"]["user"]["uid"], 65532);

    NetNs::create().block_on(async {
        let state = dir.path().join("runc-state");
        let id = format!("dermaga-test-{}", std::process::id());
        let log = std::fs::File::create(dir.path().join("container.log")).unwrap();
        let status = Command::new("runc")
            .args([
                "--root",
                state.to_str().unwrap(),
                "run",
                "--detach",
                "--bundle",
            ])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .expect("cannot run runc (.ci/run installs it)");
        let container_log = || std::fs::read_to_string(dir.path().join("container.log")).unwrap();
        assert!(status.success(), "runc run failed:\n{}", container_log());
        // nc, as the README's quick start: the demo's greeting through the gateway.
        let deadline = Instant::now() + Duration::from_secs(20);
        let answer = loop {
            let out = Command::new("nc")
                .args(["-w", "2", "127.0.0.1", "10000"])
                .stdin(Stdio::null())
                .output()
                .expect("cannot run nc (.ci/run installs netcat-openbsd)");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !text.is_empty() {
                break text;
            }
            assert!(
                Instant::now() < deadline,
                "the container's demo never answered:\n{}",
                container_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            answer.trim(),
            "respon dari port 10000",
            "{}",
            container_log()
        );
        // Its process: user 65532, root mounted read-only.
        let state_json = run("runc", &["--root", state.to_str().unwrap(), "state", &id]);
        let pid = serde_json::from_str::<Value>(&state_json).unwrap()["pid"]
            .as_i64()
            .unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65532"),
            "{uid}"
        );
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .unwrap();
        assert!(
            root.split_whitespace()
                .nth(5)
                .unwrap()
                .split(',')
                .any(|o| o == "ro"),
            "{root}"
        );
        // SIGTERM: the gateway drains and exits; the container is gone.
        run(
            "runc",
            &["--root", state.to_str().unwrap(), "kill", &id, "TERM"],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state_json = run("runc", &["--root", state.to_str().unwrap(), "state", &id]);
            if serde_json::from_str::<Value>(&state_json).unwrap()["status"] == "stopped" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        run("runc", &["--root", state.to_str().unwrap(), "delete", &id]);
        println!("{}", container_log());
    });
}

/// The digest of the layout's one manifest.
fn blob_index(layout: &Path) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    manifests[0]["digest"].as_str().unwrap().to_owned()
}
