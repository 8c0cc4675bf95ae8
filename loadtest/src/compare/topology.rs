//! Where the processes of a comparison run and on which addresses.
//!
//! - `loopback`: everything in this network namespace, on `127.NET.0.x` addresses (proxies on
//!   `.1`–`.4`, backends on `.10`): no NIC, no veth, a 64 KiB MTU.
//! - `veth`: closer to a node. Three network namespaces joined by veth pairs (MTU 1500), made
//!   at the start and removed at the end (and before, if a previous run left them):
//!
//!   ```text
//!   ltNET-client 10.NET.1.1 ──veth── 10.NET.1.2 (+ .11–.14, one per proxy) ltNET-gateway
//!                                    10.NET.2.1 ──veth── 10.NET.2.2 ltNET-backend
//!   ```
//!
//!   The load generators (this process moves itself into the client namespace, so every
//!   client it starts is there too), every proxy in the gateway namespace, every backend in
//!   the backend namespace. The gateway namespace forwards IP, so the direct path is the
//!   client reaching the backend through the gateway's kernel, as a node routes to a pod.
//!   `tcp_tw_reuse` is on in the client and gateway namespaces (as it is on loopback by
//!   default) so that the new-connection workloads do not run out of ports.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use super::contenders::Contender;

/// The two topologies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Everything on loopback addresses of this namespace.
    Loopback,
    /// Client, gateway and backend namespaces joined by veth pairs.
    Veth,
}

/// A topology and the second octet of its addresses.
#[derive(Clone, Copy, Debug)]
pub struct Topology {
    /// Which one.
    pub kind: Kind,
    /// Second octet of every address (`127.NET.0.x` or `10.NET.x.y`), so that two runs can
    /// share a machine.
    pub net: u8,
}

/// Which namespace a process belongs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A proxy.
    Gateway,
    /// A backend server.
    Backend,
}

impl Topology {
    /// Everything on `127.NET.0.x`.
    pub fn loopback(net: u8) -> Self {
        Topology {
            kind: Kind::Loopback,
            net,
        }
    }

    /// `loopback` or `veth`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Loopback => "loopback",
            Kind::Veth => "veth",
        }
    }

    /// The address proxy `c` listens on.
    pub fn proxy_ip(&self, c: Contender) -> IpAddr {
        let n = self.net;
        match self.kind {
            Kind::Loopback => IpAddr::V4(Ipv4Addr::new(127, n, 0, c as u8)),
            Kind::Veth => IpAddr::V4(Ipv4Addr::new(10, n, 1, 10 + c as u8)),
        }
    }

    /// The address every backend listens on.
    pub fn backend_ip(&self) -> IpAddr {
        let n = self.net;
        match self.kind {
            Kind::Loopback => IpAddr::V4(Ipv4Addr::new(127, n, 0, 10)),
            Kind::Veth => IpAddr::V4(Ipv4Addr::new(10, n, 2, 2)),
        }
    }

    /// The namespace of `role`, if this topology has namespaces.
    fn namespace(&self, role: Role) -> Option<String> {
        let suffix = match role {
            Role::Gateway => "gateway",
            Role::Backend => "backend",
        };
        (self.kind == Kind::Veth).then(|| format!("lt{}-{suffix}", self.net))
    }

    /// `program` in the namespace of `role`, pinned to `cpus` (a taskset list; `ip netns
    /// exec` and `taskset` both exec what they run, so the child's pid is the program's).
    pub fn command(&self, role: Role, cpus: &str, program: &Path) -> Command {
        let mut c;
        match self.namespace(role) {
            Some(ns) => {
                c = Command::new("ip");
                c.args(["netns", "exec", &ns, "taskset", "-c"]);
            }
            None => {
                c = Command::new("taskset");
                c.arg("-c");
            }
        }
        c.arg(cpus).arg(program);
        c
    }

    /// Makes the namespaces of a `veth` topology (nothing for `loopback`) and moves this
    /// process into the client one; they are removed when the guard is dropped.
    pub fn build(&self) -> anyhow::Result<Namespaces> {
        if self.kind == Kind::Loopback {
            return Ok(Namespaces { names: vec![] });
        }
        let n = self.net;
        let names: Vec<String> = ["client", "gateway", "backend"]
            .iter()
            .map(|s| format!("lt{n}-{s}"))
            .collect();
        for ns in &names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let guard = Namespaces {
            names: names.clone(),
        };
        let (client, gateway, backend) = (&names[0], &names[1], &names[2]);
        let mut steps: Vec<Vec<String>> = names
            .iter()
            .map(|ns| vec!["netns".into(), "add".into(), ns.clone()])
            .collect();
        let s = |line: String| line.split(' ').map(String::from).collect::<Vec<String>>();
        steps.extend([
            s(format!(
                "link add lt{n}c netns {client} type veth peer name lt{n}g netns {gateway}"
            )),
            s(format!(
                "link add lt{n}b netns {gateway} type veth peer name lt{n}e netns {backend}"
            )),
            s(format!("-n {client} addr add 10.{n}.1.1/24 dev lt{n}c")),
            s(format!("-n {gateway} addr add 10.{n}.1.2/24 dev lt{n}g")),
            s(format!("-n {gateway} addr add 10.{n}.2.1/24 dev lt{n}b")),
            s(format!("-n {backend} addr add 10.{n}.2.2/24 dev lt{n}e")),
        ]);
        for i in 0..5u8 {
            steps.push(s(format!(
                "-n {gateway} addr add 10.{n}.1.{}/24 dev lt{n}g",
                10 + i
            )));
        }
        for (ns, dev) in [
            (client, format!("lt{n}c")),
            (gateway, format!("lt{n}g")),
            (gateway, format!("lt{n}b")),
            (backend, format!("lt{n}e")),
        ] {
            steps.push(s(format!("-n {ns} link set {dev} up")));
        }
        for ns in &names {
            steps.push(s(format!("-n {ns} link set lo up")));
        }
        steps.push(s(format!(
            "-n {client} route add 10.{n}.2.0/24 via 10.{n}.1.2"
        )));
        steps.push(s(format!("-n {backend} route add default via 10.{n}.2.1")));
        for (ns, setting) in [
            (gateway, "net.ipv4.ip_forward=1"),
            (gateway, "net.ipv4.tcp_tw_reuse=1"),
            (client, "net.ipv4.tcp_tw_reuse=1"),
        ] {
            steps.push(s(format!("netns exec {ns} sysctl -qw {setting}")));
        }
        for args in steps {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .context("running ip (install iproute2)")?;
            anyhow::ensure!(
                out.status.success(),
                "building the veth topology: `ip {}` failed: {} (it needs root, or CAP_NET_ADMIN \
                 and CAP_SYS_ADMIN)",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let file = std::fs::File::open(format!("/run/netns/{client}"))
            .with_context(|| format!("opening namespace {client}"))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering namespace {client}"))?;
        Ok(guard)
    }
}

/// The namespaces of a `veth` topology, deleted (with their veth pairs) when dropped.
pub struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_commands_per_topology() {
        let l = Topology::loopback(77);
        assert_eq!(l.proxy_ip(Contender::Nginx).to_string(), "127.77.0.2");
        assert_eq!(l.backend_ip().to_string(), "127.77.0.10");
        let c = l.command(Role::Gateway, "0", Path::new("nginx"));
        assert_eq!(c.get_program(), "taskset");
        let v = Topology {
            kind: Kind::Veth,
            net: 9,
        };
        assert_eq!(v.proxy_ip(Contender::Dermaga).to_string(), "10.9.1.11");
        assert_eq!(v.backend_ip().to_string(), "10.9.2.2");
        let c = v.command(Role::Backend, "1", Path::new("redis-server"));
        let args: Vec<_> = c.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "netns",
                "exec",
                "lt9-backend",
                "taskset",
                "-c",
                "1",
                "redis-server"
            ]
        );
    }
}
