//! segflow-testkit: what segflow's tests share. A dev-dependency only.
//!
//! - [`slt`]: the DataFusion driver for golden SQL files (`tests/slt/**/*.slt`), with a `model`
//!   statement that runs one of the repository's `sql/` files with bound params.
//! - [`delta`]: reading published Delta tables back, as a BI tool would.

pub mod delta;
pub mod slt;

/// The repository root (where `Cargo.toml`, `sql/` and `pipelines/` are).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root exists")
}
