//! k-means as DataFusion functions, so every pass over the data is a DataFusion plan.
//!
//! - `kmeans_pass(row_id, f1, ..., fd)`: an aggregate that runs one [`Pass`] (a Lloyd step,
//!   k-means++ draws or candidate potentials) for every run at once. Its state is the exact
//!   [`State`], merged by addition and maximum, so DataFusion's partial/final aggregation (and
//!   a distributed engine's) gives the same bytes whatever the partitioning.
//! - `kmeans_assign(f1, ..., fd)`: the nearest of a set of centers, as a 0-based `Int32`.
//!
//! Both carry their centers in the function value rather than as a literal argument: an
//! aggregate's literal arguments are expanded to a full column per batch, which for a few
//! kilobytes of centers would copy megabytes per batch. A plan that crosses machines ships the
//! function with its bytes ([`Pass::encode`]) through an extension codec.

use std::sync::Arc;

use segflow_core::datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int32Array};
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use segflow_core::datafusion::common::cast::{as_binary_array, as_float64_array, as_uint64_array};
use segflow_core::datafusion::common::{Result, ScalarValue, exec_err};
use segflow_core::datafusion::error::DataFusionError;
use segflow_core::datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use segflow_core::datafusion::logical_expr::utils::format_state_name;
use segflow_core::datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Expr, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::kernel::{Gathered, Pass, State, WireError, nearest};
use super::transform::Fitted;

fn wire(e: WireError) -> DataFusionError {
    DataFusionError::Execution(format!("kmeans: {e}"))
}

/// The aggregate running one pass; see the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct KMeansPass {
    bytes: Vec<u8>,
    signature: Signature,
}

impl KMeansPass {
    /// `kmeans_pass(row_id, features...)` for this pass.
    pub fn call(pass: &Pass, args: Vec<Expr>) -> Expr {
        AggregateUDF::from(KMeansPass {
            bytes: pass.encode(),
            signature: Signature::variadic_any(Volatility::Immutable),
        })
        .call(args)
    }
}

impl KMeansPass {
    /// The pass this function runs, as [`Pass::encode`] wrote it: what a plan sent to another
    /// process carries.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The function from [`KMeansPass::bytes`]; fails on bytes that are not a pass.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<AggregateUDF> {
        Pass::decode(bytes).map_err(wire)?;
        Ok(AggregateUDF::from(KMeansPass {
            bytes: bytes.to_vec(),
            signature: Signature::variadic_any(Volatility::Immutable),
        }))
    }
}

impl AggregateUDFImpl for KMeansPass {
    fn name(&self) -> &str {
        "kmeans_pass"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let pass = Pass::decode(&self.bytes).map_err(wire)?;
        if args.exprs.len() != pass.dims() + 1 {
            return exec_err!(
                "kmeans_pass takes a row id and {} features, got {} arguments",
                pass.dims(),
                args.exprs.len()
            );
        }
        Ok(Box::new(PassAccumulator {
            state: pass.empty_state(),
            pass,
            xs: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Field::new(
                format_state_name(args.name, "state"),
                DataType::Binary,
                true,
            )
            .into(),
        ])
    }
}

#[derive(Debug)]
struct PassAccumulator {
    pass: Pass,
    state: State,
    /// The batch's rows, row-major: reused between batches.
    xs: Vec<f64>,
}

impl Accumulator for PassAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = as_uint64_array(&values[0])?;
        let features: Vec<&Float64Array> = values[1..]
            .iter()
            .map(|a| as_float64_array(a))
            .collect::<Result<_>>()?;
        if rows.null_count() > 0 || features.iter().any(|f| f.null_count() > 0) {
            return exec_err!("kmeans_pass got a null row id or feature");
        }
        if let Some(&row) = rows.values().iter().find(|&&r| !self.pass.takes_row(r)) {
            return exec_err!("kmeans_pass got row id {row}, past the tiles of its pass");
        }
        row_major(&features, &mut self.xs);
        self.pass.update(&mut self.state, rows.values(), &self.xs);
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(self.state.encode())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.state.ints.len() * 16
            + self.state.rows.len() * (std::mem::size_of::<Gathered>() + 8 * self.pass.dims())
            + self.xs.capacity() * 8
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let states = as_binary_array(&states[0])?;
        for bytes in states.iter().flatten() {
            let other = State::decode(bytes).map_err(wire)?;
            self.state.merge(&other).map_err(wire)?;
        }
        Ok(())
    }
}

/// Columns to one row-major buffer, which the distance loops read contiguously.
fn row_major(features: &[&Float64Array], xs: &mut Vec<f64>) {
    let d = features.len();
    let n = features.first().map_or(0, |f| f.len());
    xs.clear();
    xs.resize(n * d, 0.0);
    for (j, f) in features.iter().enumerate() {
        for (i, &v) in f.values().iter().enumerate() {
            xs[i * d + j] = v;
        }
    }
}

/// The scalar function giving each row the id of its nearest center.
#[derive(Debug)]
pub struct KMeansAssign {
    /// `k * d` centers, row-major, in the clustered (transformed) space.
    centers: Vec<f64>,
    /// Each center's cluster id.
    ids: Vec<i32>,
    /// Per feature, the fitted transforms that take an argument into the clustered space:
    /// none when the arguments are already transformed.
    steps: Vec<Vec<Fitted>>,
    d: usize,
    signature: Signature,
}

impl KMeansAssign {
    /// `kmeans_assign(features...)` against these centers and their ids, for features
    /// already in the clustered space.
    pub fn call(centers: &[f64], ids: &[i32], args: Vec<Expr>) -> Expr {
        let steps = vec![Vec::new(); args.len()];
        Self::call_raw(centers, ids, steps, args)
    }

    /// The same for features in their original units: each row goes through `steps` (one
    /// list per feature, the transforms as fitted) first, by the code that transformed the
    /// rows the centers were fitted on, so a row gets the cluster it was fitted in.
    pub(crate) fn call_raw(
        centers: &[f64],
        ids: &[i32],
        steps: Vec<Vec<Fitted>>,
        args: Vec<Expr>,
    ) -> Expr {
        ScalarUDF::from(KMeansAssign {
            centers: centers.to_vec(),
            ids: ids.to_vec(),
            steps,
            d: args.len(),
            signature: Signature::variadic_any(Volatility::Immutable),
        })
        .call(args)
    }

    /// What the function is, as bits (f64 has neither `Eq` nor `Hash`).
    fn key(&self) -> (Vec<u64>, &[i32], Vec<[u64; 3]>) {
        let steps = self
            .steps
            .iter()
            .flat_map(|s| s.iter().map(Fitted::bits).chain([[u64::MAX; 3]]));
        (
            self.centers.iter().map(|c| c.to_bits()).collect(),
            &self.ids,
            steps.collect(),
        )
    }
}

impl KMeansAssign {
    /// The function as bytes: `d`, `k`, the centers and ids, and per feature its steps, as
    /// little-endian words.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut words: Vec<u64> = vec![self.d as u64, self.ids.len() as u64];
        words.extend(self.centers.iter().map(|c| c.to_bits()));
        words.extend(self.ids.iter().map(|&i| i as u32 as u64));
        for steps in &self.steps {
            words.push(steps.len() as u64);
            words.extend(steps.iter().flat_map(Fitted::bits));
        }
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// The function [`KMeansAssign::encode`] wrote.
    pub(crate) fn decode(bytes: &[u8]) -> Result<ScalarUDF> {
        let bad = || DataFusionError::Internal("kmeans_assign: truncated or bad bytes".into());
        if !bytes.len().is_multiple_of(8) {
            return Err(bad());
        }
        let mut words = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
        let mut next = || words.next().ok_or_else(bad);
        let d = next()? as usize;
        let k = next()? as usize;
        let centers = (0..k * d)
            .map(|_| next().map(f64::from_bits))
            .collect::<Result<Vec<_>>>()?;
        let ids = (0..k)
            .map(|_| next().map(|w| w as u32 as i32))
            .collect::<Result<Vec<_>>>()?;
        let steps = (0..d)
            .map(|_| {
                let n = next()? as usize;
                (0..n)
                    .map(|_| Fitted::from_bits([next()?, next()?, next()?]).ok_or_else(bad))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ScalarUDF::from(KMeansAssign {
            centers,
            ids,
            steps,
            d,
            signature: Signature::variadic_any(Volatility::Immutable),
        }))
    }
}

impl PartialEq for KMeansAssign {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for KMeansAssign {}

impl std::hash::Hash for KMeansAssign {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl ScalarUDFImpl for KMeansAssign {
    fn name(&self) -> &str {
        "kmeans_assign"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        if arrays.len() != self.d {
            return exec_err!("kmeans_assign takes {} features", self.d);
        }
        let features: Vec<&Float64Array> = arrays
            .iter()
            .map(|a| as_float64_array(a))
            .collect::<Result<_>>()?;
        let mut xs = Vec::new();
        row_major(&features, &mut xs);
        if self.steps.iter().any(|s| !s.is_empty()) {
            for x in xs.chunks_exact_mut(self.d) {
                for (v, steps) in x.iter_mut().zip(&self.steps) {
                    *v = steps.iter().fold(*v, |v, s| s.apply(v));
                }
            }
        }
        let nulls = features.iter().any(|f| f.null_count() > 0);
        let ids: Int32Array = xs
            .chunks_exact(self.d)
            .enumerate()
            .map(|(i, x)| {
                let null = nulls && features.iter().any(|f| f.is_null(i));
                (!null).then(|| self.ids[nearest(x, &self.centers, self.d).0])
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(ids)))
    }
}
