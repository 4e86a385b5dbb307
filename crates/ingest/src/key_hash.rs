//! `key_hash(columns...)`: one 64-bit hash per row of a key, so that counting keys groups by a
//! number, not by text.
//!
//! A GROUP BY over an orders table's string key (8.5M rows at M) spent most of its time
//! in the byte-keyed hash map, comparing and copying strings; the same count over a `UInt64`
//! runs on the primitive group values. Hashes can collide, so the hash only narrows the rows:
//! [`crate::validate::duplicated_keys`] counts the exact keys among the rows whose hash
//! repeats, usually none.
//!
//! The hash is DataFusion's own (`create_hashes`, the one its joins and aggregates use) with a
//! fixed seed: the same key hashes the same in every partition, batch and run. A null hashes
//! to a fixed value, so a null key is a key like any other, as in a GROUP BY.

use std::sync::Arc;

use segflow_core::datafusion::arrow::array::UInt64Array;
use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::common::hash_utils::{RandomState, create_hashes};
use segflow_core::datafusion::common::{Result, exec_err};
use segflow_core::datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The seed: any fixed value; fixed so that two plans over the same rows agree.
const SEED: u64 = 0x5e6f_1000;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct KeyHash {
    signature: Signature,
}

impl KeyHash {
    /// `key_hash(args...)`, a `UInt64` never null.
    pub fn call(args: Vec<Expr>) -> Expr {
        Self::udf().call(args)
    }

    /// The function.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::from(KeyHash {
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for KeyHash {
    fn name(&self) -> &str {
        "key_hash"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.is_empty() {
            return exec_err!("key_hash takes at least one column");
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut hashes = vec![0u64; args.number_rows];
        create_hashes(&arrays, &RandomState::with_seed(SEED), &mut hashes)?;
        Ok(ColumnarValue::Array(Arc::new(UInt64Array::from(hashes))))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use segflow_core::datafusion::arrow::array::{Array, Int64Array, StringArray};
    use segflow_core::datafusion::arrow::record_batch::RecordBatch;
    use segflow_core::datafusion::logical_expr::ident;
    use segflow_core::datafusion::prelude::SessionContext;

    async fn hashes(batch: RecordBatch, cols: &[&str]) -> Vec<u64> {
        let ctx = SessionContext::new();
        let df = ctx.read_batch(batch).unwrap();
        let out = df
            .select(vec![KeyHash::call(
                cols.iter().map(|c| ident(*c)).collect(),
            )])
            .unwrap()
            .collect()
            .await
            .unwrap();
        out.iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<UInt64Array>().unwrap();
                assert_eq!(a.null_count(), 0);
                a.values().to_vec()
            })
            .collect()
    }

    /// Rows of a string key `id` and a number `n`.
    pub(crate) fn batch(ids: Vec<Option<&str>>, n: Vec<Option<i64>>) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(StringArray::from(ids)) as _),
            ("n", Arc::new(Int64Array::from(n)) as _),
        ])
        .unwrap()
    }

    #[tokio::test]
    async fn equal_keys_hash_equal_and_nulls_are_keys() {
        let b = batch(
            vec![Some("a"), Some("b"), Some("a"), None, None, Some("b")],
            vec![Some(1), Some(1), Some(1), None, None, Some(2)],
        );
        let one = hashes(b.clone(), &["id"]).await;
        assert_eq!(one[0], one[2]);
        assert_eq!(one[3], one[4]);
        assert_ne!(one[0], one[1]);
        assert_ne!(one[0], one[3]);
        let two = hashes(b.clone(), &["id", "n"]).await;
        assert_eq!(two[0], two[2]);
        assert_ne!(two[1], two[5], "the second column takes part");
        // The same rows in another batch (another partition) hash the same.
        let again = hashes(b.slice(2, 4), &["id", "n"]).await;
        assert_eq!(again, two[2..].to_vec());
    }
}
