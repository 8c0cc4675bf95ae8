//! A network namespace of the test's own, for tests whose endpoints must carry addresses the real
//! Kubernetes API server accepts.
//!
//! EndpointSlice validation rejects loopback (127.0.0.0/8), link-local and multicast addresses, so
//! backends registered with kube-apiserver cannot live on 127.x. [`NetNs::create`] makes a fresh
//! network namespace (`unshare(CLONE_NEWNET)`, root only), brings its `lo` up and makes the whole
//! of [`POD_NETWORK`] local to it (`ip route add local 10.233.0.0/16 dev lo`, as 127.0.0.0/8 is),
//! so a test binds any 10.233.x.y address as it would a 127.x one. Nothing leaves the namespace:
//! it has no other interface. [`NetNs::block_on`] runs a test's future there: the calling thread
//! and every thread of the runtime it builds enter the namespace (a namespace is a per-thread
//! property), and so does every process those threads start (the API server, etcd, kubectl,
//! dermaga).
//!
//! The namespace lives as long as the [`NetNs`] (it holds the namespace's descriptor) and any
//! process still in it.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::Arc;

use nix::sched::{CloneFlags, setns, unshare};

/// The addresses tests give their "pods": local inside the namespace, accepted by the API server.
pub const POD_NETWORK: &str = "10.233.0.0/16";

/// A network namespace made for one test.
pub struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// Creates the namespace: `lo` up, [`POD_NETWORK`] local. Panics with what is missing (root,
    /// `ip` from iproute2).
    pub fn create() -> Arc<Self> {
        // A fresh thread unshares, so the caller's own namespace is untouched.
        let fd = std::thread::spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| {
                panic!(
                    "unshare(CLONE_NEWNET) failed ({e}): the Kubernetes tests run their pods in a \
                     network namespace of their own and need root (CAP_SYS_ADMIN)"
                )
            });
            ip(&["link", "set", "lo", "up"]);
            ip(&["route", "add", "local", POD_NETWORK, "dev", "lo"]);
            OwnedFd::from(File::open("/proc/thread-self/ns/net").expect("own netns descriptor"))
        })
        .join()
        .expect("network namespace set-up");
        Arc::new(Self { fd })
    }

    /// Moves the calling thread into the namespace.
    pub fn enter(&self) {
        setns(&self.fd, CloneFlags::CLONE_NEWNET).expect("setns into the test's network namespace");
    }

    /// Runs `test` inside the namespace on a two-worker runtime whose threads all live there;
    /// the calling thread goes back to its own namespace afterwards (tests share one binary).
    pub fn block_on<F: std::future::Future>(self: &Arc<Self>, test: F) -> F::Output {
        let home = File::open("/proc/thread-self/ns/net").expect("own netns descriptor");
        self.enter();
        let ns = Arc::clone(self);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || ns.enter())
            .build()
            .expect("tokio runtime");
        let output = runtime.block_on(test);
        drop(runtime);
        setns(&home, CloneFlags::CLONE_NEWNET).expect("setns back to the test thread's namespace");
        output
    }
}

/// Runs `ip ARGS` (in the calling thread's namespace).
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `ip` ({e}): install iproute2 (apt-get install iproute2)")
    });
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
