//! What the `segflow` binary and its benchmarks share: the registry of every stage kind.

use segflow_core::Registry;

/// Every stage kind, in one visible place.
pub fn registry() -> Registry {
    let mut reg = Registry::new();
    segflow_ingest::register(&mut reg);
    segflow_features::register(&mut reg);
    segflow_segment::register(&mut reg);
    segflow_export::register(&mut reg);
    reg
}
