//! `diff(old, new)`: which `(port, protocol)` routes a new table adds, changes and removes.
//!
//! The listener manager binds `added`, leaves `changed` and unchanged listeners alone (a change
//! of endpoints needs no new socket: connections read the table), and drains `removed`.

use super::table::RouteTable;
use crate::names::RouteKey;

/// The difference between two tables, each list in key order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableDiff {
    /// Keys only in the new table.
    pub added: Vec<RouteKey>,
    /// Keys in both whose spec or endpoints differ.
    pub changed: Vec<RouteKey>,
    /// Keys only in the old table.
    pub removed: Vec<RouteKey>,
}

impl TableDiff {
    /// True when the tables route the same way.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Compares two tables.
pub fn diff(old: &RouteTable, new: &RouteTable) -> TableDiff {
    let mut d = TableDiff::default();
    for route in new.routes() {
        match old.get(&route.key) {
            None => d.added.push(route.key),
            Some(prev) if !prev.same_as(route) => d.changed.push(route.key),
            Some(_) => {}
        }
    }
    d.removed = old
        .keys()
        .filter(|k| new.get(k).is_none())
        .copied()
        .collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::configmap::parse_value;
    use crate::control::table::{Endpoint, Route};
    use crate::names::{ListenPort, Protocol};

    fn route(port: u16, value: &str, endpoints: &[&str]) -> Route {
        let key = RouteKey::tcp(ListenPort::new(port).unwrap());
        let endpoints = endpoints
            .iter()
            .map(|a| Endpoint {
                addr: a.parse().unwrap(),
                ready: true,
                serving: true,
                terminating: false,
                target: None,
            })
            .collect();
        Route::new(
            key,
            parse_value(value, Protocol::Tcp).unwrap(),
            endpoints,
            None,
        )
    }

    fn keys(ports: &[u16]) -> Vec<RouteKey> {
        ports
            .iter()
            .map(|p| RouteKey::tcp(ListenPort::new(*p).unwrap()))
            .collect()
    }

    #[test]
    fn table_driven() {
        let a = || route(1, "d/a:80", &["10.0.0.1:80"]);
        struct Case {
            name: &'static str,
            old: Vec<Route>,
            new: Vec<Route>,
            want: (Vec<u16>, Vec<u16>, Vec<u16>),
        }
        let cases = vec![
            Case {
                name: "same",
                old: vec![a()],
                new: vec![a()],
                want: (vec![], vec![], vec![]),
            },
            Case {
                name: "add",
                old: vec![a()],
                new: vec![a(), route(2, "d/b:80", &[])],
                want: (vec![2], vec![], vec![]),
            },
            Case {
                name: "remove",
                old: vec![a(), route(2, "d/b:80", &[])],
                new: vec![a()],
                want: (vec![], vec![], vec![2]),
            },
            Case {
                name: "endpoints change",
                old: vec![a()],
                new: vec![route(1, "d/a:80", &["10.0.0.2:80"])],
                want: (vec![], vec![1], vec![]),
            },
            Case {
                name: "flags change",
                old: vec![a()],
                new: vec![route(1, "d/a:80:PROXY", &["10.0.0.1:80"])],
                want: (vec![], vec![1], vec![]),
            },
            Case {
                name: "all at once",
                old: vec![a(), route(3, "d/c:80", &[])],
                new: vec![route(1, "d/a:81", &[]), route(2, "d/b:80", &[])],
                want: (vec![2], vec![1], vec![3]),
            },
        ];
        for c in cases {
            let d = diff(
                &RouteTable::new(c.old, vec![]),
                &RouteTable::new(c.new, vec![]),
            );
            assert_eq!(
                d,
                TableDiff {
                    added: keys(&c.want.0),
                    changed: keys(&c.want.1),
                    removed: keys(&c.want.2)
                },
                "{}",
                c.name
            );
        }
    }
}
