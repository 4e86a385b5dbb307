//! Stage fingerprints: what `segflow run --resume` compares to decide whether a failed run's
//! table can stand in for rerunning the stage that made it.
//!
//! A stage's fingerprint is a SHA-256 over everything its tables are a function of, in the
//! way Bazel keys an action: the segflow version, the stage's kind and resolved keys (vars
//! expanded), the files it was built from (SQL, contract), what it reads outside the run (a
//! listing of its input files, a Delta table's version), where its tables are written, and
//! the fingerprints of the stages that made its input tables. Stages are deterministic (a
//! rerun gives identical tables), so equal fingerprints mean equal tables.

use sha2::{Digest as _, Sha256};

/// A fingerprint being built: labelled parts, each length-prefixed so that no two different
/// sequences of parts hash alike.
pub struct Fingerprint {
    hasher: Sha256,
}

impl Default for Fingerprint {
    fn default() -> Self {
        let mut f = Fingerprint {
            hasher: Sha256::new(),
        };
        f.add("segflow fingerprint", "1");
        f.add("segflow version", env!("CARGO_PKG_VERSION"));
        f
    }
}

impl Fingerprint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one part: a label that says what it is, and its bytes.
    pub fn add(&mut self, label: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        for part in [label.as_bytes(), value] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
    }

    /// Adds a part as its JSON text (serde_json writes struct fields in declaration order and
    /// BTreeMaps in key order, so equal values give equal text).
    pub fn add_json(&mut self, label: &str, value: &impl serde::Serialize) -> crate::Result<()> {
        let text = serde_json::to_string(value)
            .map_err(|e| crate::Error::Internal(format!("fingerprint of {label}: {e}")))?;
        self.add(label, text);
        Ok(())
    }

    /// The fingerprint, as 64 hex digits.
    pub fn finish(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(parts: &[(&str, &str)]) -> String {
        let mut f = Fingerprint::new();
        for (l, v) in parts {
            f.add(l, v);
        }
        f.finish()
    }

    #[test]
    fn parts_are_not_confused_across_boundaries() {
        assert_eq!(of(&[("a", "bc")]), of(&[("a", "bc")]));
        assert_ne!(of(&[("a", "bc")]), of(&[("ab", "c")]));
        assert_ne!(of(&[("a", "b"), ("c", "d")]), of(&[("a", "bcd")]));
        assert_eq!(of(&[]).len(), 64);
    }
}
