//! Which workload a pod belongs to: its controller owner, followed through a ReplicaSet to its
//! Deployment and through a Job to its CronJob (the objects people write and recognise).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// A workload: `Deployment shop/web`, `CronJob shop/backup`, or a pod of its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`, `ReplicaSet`, `Pod`, or the
    /// kind of another controller.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl Workload {
    /// Whether its pods run to completion (a Job's or a CronJob's): not meant to serve.
    pub fn runs_to_completion(&self) -> bool {
        self.kind == "Job" || self.kind == "CronJob"
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The ReplicaSets and Jobs, by namespace and name, to follow owners through.
#[derive(Default)]
pub struct Owners {
    replica_sets: BTreeMap<(String, String), Option<OwnerReference>>,
    jobs: BTreeMap<(String, String), Option<OwnerReference>>,
}

fn key(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The owner reference with `controller: true`, if any.
fn controller(meta: &ObjectMeta) -> Option<OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .cloned()
}

impl Owners {
    /// From the listed ReplicaSets and Jobs.
    pub fn new(replica_sets: &[ReplicaSet], jobs: &[Job]) -> Self {
        Owners {
            replica_sets: replica_sets
                .iter()
                .map(|r| (key(&r.metadata), controller(&r.metadata)))
                .collect(),
            jobs: jobs
                .iter()
                .map(|j| (key(&j.metadata), controller(&j.metadata)))
                .collect(),
        }
    }

    /// The workload of `pod`: its controller, one step further for a ReplicaSet or a Job
    /// that has a controller itself; the pod itself when nothing controls it.
    pub fn workload_of(&self, pod: &Pod) -> Workload {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let Some(owner) = controller(&pod.metadata) else {
            return Workload {
                kind: "Pod".into(),
                namespace,
                name: pod.metadata.name.clone().unwrap_or_default(),
            };
        };
        let parents = match owner.kind.as_str() {
            "ReplicaSet" => Some(&self.replica_sets),
            "Job" => Some(&self.jobs),
            _ => None,
        };
        let parent = parents
            .and_then(|p| p.get(&(namespace.clone(), owner.name.clone())))
            .cloned()
            .flatten();
        let owner = parent.unwrap_or(owner);
        Workload {
            kind: owner.kind,
            namespace,
            name: owner.name,
        }
    }
}
