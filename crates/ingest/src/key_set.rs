//! `key_in_<table>(columns...)`: whether a row's key is one of a table's keys, looked up in a
//! hash set built once from that table.
//!
//! A foreign key check was an outer join of every checked row to the referenced table's
//! keys. DataFusion partitions both sides of such a join by hash, so every one of the 8.5M
//! orders at M, with all its columns, was copied through a repartition and then again into
//! the join's output: most of the check's time, for a table (the customers) that fits in
//! memory many times over. The set is built from the referenced table before the plan runs
//! and the check becomes a projection: no repartition, no copy, on every partition at once.
//!
//! Keys are compared in Arrow's row format ([`RowConverter`]), which is exact for every
//! type and for keys of several columns. A key with a null in it is in no set (as in a
//! join); the function returns null for it.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use segflow_core::datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use segflow_core::datafusion::arrow::compute::kernels::boolean::is_not_null;
use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::arrow::row::{RowConverter, SortField};
use segflow_core::datafusion::common::Result;
use segflow_core::datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The distinct keys of a table, in Arrow's row format.
#[derive(Debug)]
pub struct KeySet {
    types: Vec<DataType>,
    converter: RowConverter,
    keys: HashSet<Box<[u8]>>,
}

impl KeySet {
    /// The keys in `batches`, whose columns are the key's columns, in order.
    pub fn new(types: Vec<DataType>, batches: &[RecordBatch]) -> Result<Self> {
        let converter = RowConverter::new(types.iter().cloned().map(SortField::new).collect())?;
        let mut keys = HashSet::new();
        for b in batches {
            let rows = converter.convert_columns(b.columns())?;
            let complete = all_set(b.columns())?;
            keys.reserve(b.num_rows());
            for (i, row) in rows.iter().enumerate() {
                if complete.as_ref().is_none_or(|c| c.value(i)) {
                    keys.insert(row.as_ref().into());
                }
            }
        }
        Ok(KeySet {
            types,
            converter,
            keys,
        })
    }

    /// How many distinct keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// `key_in_<name>(columns...)`: true where the row's key is in the set.
    pub fn call(self: &Arc<Self>, name: &str, columns: Vec<Expr>) -> Expr {
        ScalarUDF::from(KeyIn {
            name: format!("key_in_{name}"),
            set: self.clone(),
            signature: Signature::exact(self.types.clone(), Volatility::Immutable),
        })
        .call(columns)
    }

    fn contains(&self, columns: &[ArrayRef]) -> Result<BooleanArray> {
        let rows = self.converter.convert_columns(columns)?;
        let complete = all_set(columns)?;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                complete
                    .as_ref()
                    .is_none_or(|c| c.value(i))
                    .then(|| self.keys.contains(row.as_ref()))
            })
            .collect())
    }
}

/// Per row, whether no key column is null; `None` when no column has a null.
fn all_set(columns: &[ArrayRef]) -> Result<Option<BooleanArray>> {
    let mut out: Option<BooleanArray> = None;
    for c in columns.iter().filter(|c| c.null_count() > 0) {
        let set = is_not_null(c)?;
        out = Some(match out {
            None => set,
            Some(o) => segflow_core::datafusion::arrow::compute::and(&o, &set)?,
        });
    }
    Ok(out)
}

#[derive(Debug)]
struct KeyIn {
    name: String,
    set: Arc<KeySet>,
    signature: Signature,
}

// One function per set: two are the same function when they look in the same set.
impl PartialEq for KeyIn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.set, &other.set) && self.name == other.name
    }
}

impl Eq for KeyIn {}

impl Hash for KeyIn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        Arc::as_ptr(&self.set).hash(state);
    }
}

impl ScalarUDFImpl for KeyIn {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array(Arc::new(self.set.contains(&arrays)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_hash::tests::batch;
    use segflow_core::datafusion::arrow::array::AsArray;
    use segflow_core::datafusion::logical_expr::ident;
    use segflow_core::datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn finds_exact_keys_of_one_or_two_columns_and_never_a_null_one() {
        let target = batch(
            vec![Some("a"), Some("b"), None, Some("a")],
            vec![Some(1), Some(2), Some(3), Some(1)],
        );
        let probe = batch(
            vec![Some("a"), Some("b"), Some("c"), None, Some("b")],
            vec![Some(1), Some(1), Some(1), Some(3), None],
        );
        let ctx = SessionContext::new();
        let one =
            Arc::new(KeySet::new(vec![DataType::Utf8], &[target.project(&[0]).unwrap()]).unwrap());
        assert_eq!(one.len(), 2, "distinct, without the null key");
        let two = Arc::new(KeySet::new(vec![DataType::Utf8, DataType::Int64], &[target]).unwrap());
        let out = ctx
            .read_batch(probe)
            .unwrap()
            .select(vec![
                one.call("t", vec![ident("id")]).alias("one"),
                two.call("t", vec![ident("id"), ident("n")]).alias("two"),
            ])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let got =
            |c: usize| -> Vec<Option<bool>> { out[0].column(c).as_boolean().iter().collect() };
        assert_eq!(
            got(0),
            [Some(true), Some(true), Some(false), None, Some(true)]
        );
        assert_eq!(got(1), [Some(true), Some(false), Some(false), None, None]);
    }
}
