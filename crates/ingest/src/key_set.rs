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
//! The set is a hash table from each key's hash (DataFusion's `create_hashes`, vectorized,
//! the hash its joins use) to the key's row in the table's key columns; keys that share a hash
//! are chained, and a probe compares the key's values exactly, column by column. A key with a
//! null in it is in no set (as in a join); the function returns null for it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use segflow_core::datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, DynComparator, RecordBatch, make_comparator,
};
use segflow_core::datafusion::arrow::compute::SortOptions;
use segflow_core::datafusion::arrow::compute::concat;
use segflow_core::datafusion::arrow::compute::kernels::boolean::is_not_null;
use segflow_core::datafusion::arrow::datatypes::DataType;
use segflow_core::datafusion::common::Result;
use segflow_core::datafusion::common::hash_utils::{RandomState, create_hashes};
use segflow_core::datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Any fixed seed: the table and its probes must hash alike.
const SEED: u64 = 0x6b65_7973;

/// The end of a chain of keys that share a hash.
const END: u32 = u32::MAX;

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }

    fn write_u64(&mut self, h: u64) {
        self.0 = h;
    }
}

/// The distinct keys of a table.
#[derive(Debug)]
pub struct KeySet {
    types: Vec<DataType>,
    /// The key columns of the table, all rows.
    columns: Vec<ArrayRef>,
    /// A key's hash to the first row of its chain.
    heads: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    /// Per row, the next row in its chain (another key with the same hash), or [`END`].
    next: Vec<u32>,
    distinct: usize,
}

impl KeySet {
    /// The keys in `batches`, whose columns are the key's columns, in order, of `types`.
    pub fn new(types: Vec<DataType>, batches: &[RecordBatch]) -> Result<Self> {
        let columns: Vec<ArrayRef> = (0..types.len())
            .map(|i| {
                let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
                if parts.is_empty() {
                    Ok(segflow_core::datafusion::arrow::array::new_empty_array(
                        &types[i],
                    ))
                } else {
                    concat(&parts)
                }
            })
            .collect::<std::result::Result<_, _>>()?;
        let rows = columns.first().map_or(0, |c| c.len());
        if rows >= END as usize {
            return segflow_core::datafusion::common::exec_err!(
                "a referenced table of {rows} rows is too large for a key set"
            );
        }
        let hashes = hashes(&columns, rows)?;
        let complete = all_set(&columns)?;
        let same = comparators(&columns, &columns)?;
        let mut heads = HashMap::with_capacity_and_hasher(rows, Default::default());
        let mut next = vec![END; rows];
        let mut distinct = 0;
        for (row, h) in hashes.iter().enumerate() {
            if complete.as_ref().is_some_and(|c| !c.value(row)) {
                continue;
            }
            let head = heads.entry(*h).or_insert(END);
            if find(*head, &next, |r| equal(&same, row, r)) {
                continue; // a key seen before
            }
            next[row] = *head;
            *head = row as u32;
            distinct += 1;
        }
        Ok(KeySet {
            types,
            columns,
            heads,
            next,
            distinct,
        })
    }

    /// How many distinct keys there are.
    pub fn len(&self) -> usize {
        self.distinct
    }

    /// `key_in_<name>(columns...)`: true where the row's key is in the set.
    pub fn call(self: &Arc<Self>, name: &str, columns: Vec<Expr>) -> Expr {
        self.udf(format!("key_in_{name}")).call(columns)
    }

    /// The function named `name` that looks keys up in this set.
    pub(crate) fn udf(self: &Arc<Self>, name: String) -> ScalarUDF {
        ScalarUDF::from(KeyIn {
            name,
            set: self.clone(),
            signature: Signature::exact(self.types.clone(), Volatility::Immutable),
        })
    }

    /// The set's key columns as a batch (columns `k0`, `k1`, ...), from which [`KeySet::new`]
    /// builds the same set.
    fn batch(&self) -> Result<RecordBatch> {
        use segflow_core::datafusion::arrow::datatypes::{Field, Schema};
        let fields: Vec<Field> = self
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("k{i}"), t.clone(), true))
            .collect();
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            self.columns.clone(),
        )?)
    }

    fn contains(&self, columns: &[ArrayRef]) -> Result<BooleanArray> {
        let rows = columns.first().map_or(0, |c| c.len());
        let hashes = hashes(columns, rows)?;
        let complete = all_set(columns)?;
        let same = comparators(columns, &self.columns)?;
        Ok(hashes
            .iter()
            .enumerate()
            .map(|(row, h)| {
                if complete.as_ref().is_some_and(|c| !c.value(row)) {
                    return None;
                }
                let head = self.heads.get(h).copied().unwrap_or(END);
                Some(find(head, &self.next, |r| equal(&same, row, r)))
            })
            .collect())
    }
}

fn hashes(columns: &[ArrayRef], rows: usize) -> Result<Vec<u64>> {
    let mut hashes = vec![0u64; rows];
    create_hashes(columns, &RandomState::with_seed(SEED), &mut hashes)?;
    Ok(hashes)
}

/// Per column, a comparison of a row of `left` with a row of `right`.
fn comparators(left: &[ArrayRef], right: &[ArrayRef]) -> Result<Vec<DynComparator>> {
    left.iter()
        .zip(right)
        .map(|(l, r)| {
            Ok(make_comparator(
                l.as_ref(),
                r.as_ref(),
                SortOptions::default(),
            )?)
        })
        .collect()
}

fn equal(same: &[DynComparator], left: usize, right: usize) -> bool {
    same.iter().all(|c| c(left, right).is_eq())
}

/// Whether the chain from `head` has a row `is`.
fn find(mut row: u32, next: &[u32], is: impl Fn(usize) -> bool) -> bool {
    while row != END {
        if is(row as usize) {
            return true;
        }
        row = next[row as usize];
    }
    false
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
pub(crate) struct KeyIn {
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

impl KeyIn {
    /// Its name and its set's key columns, for [`crate::wire`].
    pub(crate) fn parts(&self) -> Result<(&str, RecordBatch)> {
        Ok((&self.name, self.set.batch()?))
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
