//! Patch metadata of the served kinds: which lists strategic merge patch merges (and by which
//! key) instead of replacing. It mirrors the `patchStrategy`/`patchMergeKey` tags of the real Go
//! types; every list not named here is atomic (replaced whole), e.g. EndpointSlice `endpoints`
//! and `ports`, Service `ipFamilies`, `clusterIPs` and `externalIPs`.

use crate::catalog::{Resource, resources};

/// How strategic merge patch treats one list field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// Replaced whole by the patch's list.
    Replace,
    /// A list of maps merged element-wise by this key.
    MergeByKey(&'static str),
    /// A list of scalars merged as a set (union, original order first).
    MergeScalars,
}

/// The strategy for the list at `path` (field names from the object root, list positions
/// left out) in objects of `resource`.
pub(crate) fn list_strategy(resource: &Resource, path: &[&str]) -> ListStrategy {
    match path {
        ["metadata", "finalizers"] => ListStrategy::MergeScalars,
        ["metadata", "ownerReferences"] => ListStrategy::MergeByKey("uid"),
        ["spec", "ports"] if *resource == resources::SERVICES => ListStrategy::MergeByKey("port"),
        ["status", "conditions"]
            if *resource == resources::SERVICES || *resource == resources::NAMESPACES =>
        {
            ListStrategy::MergeByKey("type")
        }
        ["status", "loadBalancer", "ingress", "ports"] if *resource == resources::SERVICES => {
            ListStrategy::Replace
        }
        _ => ListStrategy::Replace,
    }
}
