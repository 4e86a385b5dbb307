//! `features.clv`: the purchase summary (a SQL file), both models fitted on it, and every
//! customer's predictions, as two run tables: the customers' values and the models'
//! parameters.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use segflow_core::datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    UInt64Array,
};
use segflow_core::datafusion::arrow::compute::{cast, concat};
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema};
use segflow_core::datafusion::prelude::{SessionContext, col};
use segflow_core::spec::StageSpec;
use segflow_core::sql::{Params, SqlFile};
use segflow_core::stage::{BuildContext, RunInfo, Stage, StageContext, StageFactory};
use segflow_core::yaml::Value;
use segflow_core::{Error, Result};
use serde::Deserialize;

use super::bgnbd::{self, History};
use super::fit::{Fit, fit};
use super::gamma_gamma;
use super::predict::predict_all;
use super::{BgNbdData, GammaGammaData};

/// The summary's columns, in order: what the SQL file must return.
pub const SUMMARY_COLUMNS: [&str; 6] = [
    "customer_id",
    "as_of",
    "repeat_purchases",
    "repeat_recency_days",
    "observed_days",
    "avg_repeat_amount",
];

/// The YAML keys of a `features.clv` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClvConfig {
    /// The per-customer purchase summary, relative to `sql/` (columns: [`SUMMARY_COLUMNS`]).
    pub summary: String,
    /// The summary's `$name` params, as for `features.sql`.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// Months of value predicted (30 days each).
    #[serde(default = "default_months", deserialize_with = "number")]
    pub horizon_months: f64,
    /// Monthly discount rate of predicted value.
    #[serde(default = "default_discount", deserialize_with = "number")]
    pub monthly_discount: f64,
    /// L2 penalty on the parameters (lifetimes' `penalizer_coef`).
    #[serde(default, deserialize_with = "number")]
    pub penalizer: f64,
    /// Iterations of L-BFGS per fit before it counts as not converged.
    #[serde(default = "default_iterations", deserialize_with = "number")]
    pub max_iterations: f64,
    /// Publish a fit that did not converge instead of failing the stage (exit 3).
    #[serde(default, deserialize_with = "boolean")]
    pub allow_unconverged: bool,
    /// The run table of the models' parameters.
    pub model_output: String,
}

fn default_months() -> f64 {
    12.0
}
fn default_discount() -> f64 {
    0.01
}
fn default_iterations() -> f64 {
    1000.0
}

/// A number written as one, or as text (what a `${var}` expands to).
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        F(f64),
        S(String),
    }
    match N::deserialize(d)? {
        N::F(f) => Ok(f),
        N::S(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a number"))),
    }
}

/// `true` or `false`, written as such or as text (what a `${var}` expands to).
fn boolean<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        B(bool),
        S(String),
    }
    match B::deserialize(d)? {
        B::B(b) => Ok(b),
        B::S(s) => match s.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "`{other}` is not true or false"
            ))),
        },
    }
}

/// A built `features.clv` stage.
#[derive(Debug)]
pub struct Clv {
    id: String,
    file: SqlFile,
    params: Params,
    config: ClvConfig,
    output: String,
}

pub(crate) struct ClvFactory;

impl StageFactory for ClvFactory {
    fn kind(&self) -> &'static str {
        "features.clv"
    }

    fn summary(&self) -> &'static str {
        "fits BG/NBD and Gamma-Gamma to a purchase summary and predicts p_alive, purchases and lifetime value per customer"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: clv
kind: features.clv
summary: features/clv_summary.sql
params: { as_of: "2026-11-01" }
horizon_months: 12
monthly_discount: 0.01
output: customer_clv_values
model_output: clv_model
"#
    }

    fn build(&self, spec: &StageSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>> {
        let config: ClvConfig = spec.config(cx.source)?;
        let (file, params) = crate::sql_stage::load(spec, cx, &config.summary, &config.params)?;
        let Some(output) = spec.output.clone() else {
            return Err(spec.error(
                cx.source,
                "has no `output`; name the table of the customers' values",
            ));
        };
        let months = config.horizon_months;
        if !((1.0..=1200.0).contains(&months) && months.fract() == 0.0) {
            return Err(spec.error(
                cx.source,
                format!("`horizon_months: {months}`: a whole number of months, 1 to 1200"),
            ));
        }
        if !(config.monthly_discount > -1.0 && config.monthly_discount.is_finite()) {
            return Err(spec.error(
                cx.source,
                "`monthly_discount` is a rate above -1, e.g. 0.01",
            ));
        }
        if !(config.penalizer >= 0.0 && config.penalizer.is_finite()) {
            return Err(spec.error(cx.source, "`penalizer` is 0 or more"));
        }
        if config.max_iterations.is_nan() || config.max_iterations < 1.0 {
            return Err(spec.error(cx.source, "`max_iterations` is 1 or more"));
        }
        Ok(Box::new(Clv {
            id: spec.id.clone(),
            file,
            params,
            config,
            output,
        }))
    }
}

/// The summary as the models take it, customers in `customer_id` order.
struct Summary {
    ids: ArrayRef,
    as_of: ArrayRef,
    histories: Vec<History>,
    /// Mean repeat amount; NaN without repeat purchases.
    amounts: Vec<f64>,
}

impl Clv {
    fn bad(&self, message: String) -> Error {
        Error::BadData {
            stage: self.id.clone(),
            message,
        }
    }

    async fn summary(&self, cx: &StageContext<'_>) -> Result<Summary> {
        let sql_err = crate::sql_stage::sql_error(&self.id, &self.file);
        let df = crate::sql_stage::query(cx, &self.id, &self.file, &self.params).await?;
        let found: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        if let Some(missing) = SUMMARY_COLUMNS
            .iter()
            .find(|c| !found.contains(&c.to_string()))
        {
            return Err(self.bad(format!(
                "{} returns no column `{missing}`; it must return {}",
                self.file.name,
                SUMMARY_COLUMNS.join(", ")
            )));
        }
        let df = df
            .select(SUMMARY_COLUMNS.iter().map(|c| col(*c)).collect::<Vec<_>>())
            .and_then(|df| df.sort(vec![col("customer_id").sort(true, true)]))
            .map_err(&sql_err)?;
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await.map_err(&sql_err)?;
        let column = |i: usize, to: Option<&DataType>| -> Result<ArrayRef> {
            let parts: Vec<ArrayRef> = batches.iter().map(|b| b.column(i).clone()).collect();
            let whole = if parts.is_empty() {
                segflow_core::datafusion::arrow::array::new_empty_array(schema.field(i).data_type())
            } else {
                let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                concat(&refs).map_err(|e| self.bad(format!("summary column {i}: {e}")))?
            };
            match to {
                Some(t) => cast(&whole, t).map_err(|e| {
                    self.bad(format!(
                        "summary column `{}` is not a number: {e}",
                        SUMMARY_COLUMNS[i]
                    ))
                }),
                None => Ok(whole),
            }
        };
        let ids = column(0, None)?;
        let as_of = column(1, None)?;
        let f64s = |i: usize| -> Result<Float64Array> {
            let a = column(i, Some(&DataType::Float64))?;
            Ok(a.as_any()
                .downcast_ref::<Float64Array>()
                .cloned()
                .unwrap_or_else(|| Float64Array::from(Vec::<f64>::new())))
        };
        let (x, t_x, t, m) = (f64s(2)?, f64s(3)?, f64s(4)?, f64s(5)?);
        let mut histories = Vec::with_capacity(x.len());
        let mut amounts = Vec::with_capacity(x.len());
        for i in 0..x.len() {
            if ids.is_null(i) || x.is_null(i) || t_x.is_null(i) || t.is_null(i) {
                return Err(self.bad(format!(
                    "row {} of the summary has a null key, repeat_purchases, \
                     repeat_recency_days or observed_days",
                    i + 1
                )));
            }
            let h = History {
                x: x.value(i),
                t_x: t_x.value(i),
                t: t.value(i),
            };
            if !(h.x >= 0.0 && h.x.fract() == 0.0 && h.t_x >= 0.0 && h.t >= h.t_x) {
                let key =
                    segflow_core::datafusion::arrow::util::display::array_value_to_string(&ids, i)
                        .unwrap_or_default();
                return Err(self.bad(format!(
                    "customer {key}: repeat_purchases {}, repeat_recency_days {}, observed_days \
                     {} break 0 <= repeat_recency_days <= observed_days (an order dated after \
                     the summary's as_of?)",
                    h.x, h.t_x, h.t
                )));
            }
            histories.push(h);
            amounts.push(if m.is_null(i) { f64::NAN } else { m.value(i) });
        }
        Ok(Summary {
            ids,
            as_of,
            histories,
            amounts,
        })
    }

    /// Fails the stage on a fit that did not converge, unless the pipeline allows it.
    fn check_converged(
        &self,
        cx: &StageContext<'_>,
        model: &str,
        f: &Fit,
        why: Option<String>,
    ) -> Result<()> {
        let key = if model == "BG/NBD" {
            "clv_bgnbd_converged"
        } else {
            "clv_gamma_gamma_converged"
        };
        cx.metric(key, serde_json::json!(f.converged));
        if f.converged {
            return Ok(());
        }
        let why = why.map(|w| format!("; {w}")).unwrap_or_default();
        let message = format!(
            "the {model} fit did not converge after {} iterations ({}){why}; set \
             `allow_unconverged: true` to publish it anyway (clv_model says converged = false), \
             or a `penalizer` such as 0.001",
            f.iterations, f.reason
        );
        if self.config.allow_unconverged {
            cx.warn(&message);
            Ok(())
        } else {
            Err(self.bad(message))
        }
    }
}

#[async_trait]
impl Stage for Clv {
    fn inputs(&self) -> Vec<String> {
        crate::sql_stage::tables_read(&self.file, &self.params)
            .into_iter()
            .collect()
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone(), self.config.model_output.clone()]
    }

    fn describe(&self) -> Vec<String> {
        vec![
            format!("summary: {}", self.file.path.display()),
            format!(
                "BG/NBD + Gamma-Gamma; {} months at {} a month",
                self.config.horizon_months, self.config.monthly_discount
            ),
        ]
    }

    async fn fingerprint(
        &self,
        _ctx: &SessionContext,
        _run: &RunInfo,
        f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> Result<()> {
        // Everything else is YAML keys.
        f.add("sql", &self.file.text);
        Ok(())
    }

    async fn run(&self, cx: &StageContext<'_>) -> Result<()> {
        // Seconds per step, in the manifest's metrics (the benchmark reports them).
        let lap = |since: &mut std::time::Instant| {
            let s = since.elapsed().as_secs_f64();
            *since = std::time::Instant::now();
            serde_json::json!((s * 1000.0).round() / 1000.0)
        };
        let mut since = std::time::Instant::now();
        let Summary {
            ids,
            as_of,
            histories,
            amounts,
        } = self.summary(cx).await?;
        cx.metric("clv_summary_seconds", lap(&mut since));
        let n = histories.len();
        if n == 0 {
            return Err(self.bad(
                "no customer has a counted order before as_of; there is nothing to fit".into(),
            ));
        }
        let c = &self.config;
        let (penalizer, iterations) = (c.penalizer, c.max_iterations as u64);
        let (histories, amounts) = (Arc::new(histories), Arc::new(amounts));
        // The fits and predictions keep every core busy for seconds at millions of customers:
        // off the async runtime, whose threads also renew the output's lease.
        let data = histories.clone();
        let bg_fit = blocking(move || fit(&BgNbdData::new(&data), penalizer, iterations))
            .await?
            .map_err(|m| self.bad(m))?;
        let bg = bgnbd::Params::from_slice(&bg_fit.params);
        // The likelihood's supremum can lie at a, b -> infinity with a / (a + b) fixed: every
        // customer then drops out after a purchase with the same probability, and the fit
        // walks along that ridge until it gives up. Its predictions approach the limit's.
        let ridge = (bg.a > 1e4 && bg.b > 1e4).then(|| {
            format!(
                "a and b grow without bound: the data show no spread in the customers' dropout \
                 probability, which is close to a / (a + b) = {:.4} for all",
                bg.a / (bg.a + bg.b)
            )
        });
        self.check_converged(cx, "BG/NBD", &bg_fit, ridge)?;

        // Gamma-Gamma on the customers with repeat purchases and a positive mean amount.
        let repeaters: Vec<(f64, f64)> = histories
            .iter()
            .zip(amounts.iter())
            .filter(|(h, m)| h.x > 0.0 && **m > 0.0)
            .map(|(h, m)| (h.x, *m))
            .collect();
        let with_repeats = histories.iter().filter(|h| h.x > 0.0).count();
        let left_out = with_repeats - repeaters.len();
        if left_out > 0 {
            cx.warn(&format!(
                "{left_out} of {with_repeats} customers with repeat purchases have a mean repeat \
                 amount of 0 or less (refunds) and are left out of the Gamma-Gamma fit"
            ));
        }
        if repeaters.len() < 3 {
            return Err(self.bad(format!(
                "{} customers with repeat purchases and a positive mean amount; the Gamma-Gamma \
                 fit needs at least 3",
                repeaters.len()
            )));
        }
        let gg_customers = repeaters.len();
        let gg_fit = blocking(move || fit(&GammaGammaData::new(&repeaters), penalizer, iterations))
            .await?
            .map_err(|m| self.bad(m))?;
        self.check_converged(cx, "Gamma-Gamma", &gg_fit, None)?;
        let gg = gamma_gamma::Params::from_slice(&gg_fit.params);
        if gg.q <= 1.0 {
            return Err(self.bad(format!(
                "the Gamma-Gamma fit gives q = {:.4}; q must exceed 1 for the population's mean \
                 spend to exist (too few or too uneven repeat buyers)",
                gg.q
            )));
        }
        cx.metric("clv_customers", serde_json::json!(n));
        cx.metric("clv_gamma_gamma_customers", serde_json::json!(gg_customers));
        cx.metric("clv_gamma_gamma_left_out", serde_json::json!(left_out));

        cx.metric("clv_fit_seconds", lap(&mut since));

        // Every customer's predictions, on all cores.
        let months = c.horizon_months as usize;
        let discount = c.monthly_discount;
        let (data, means) = (histories.clone(), amounts.clone());
        let predictions =
            blocking(move || predict_all(&bg, &gg, &data, &means, months, discount)).await?;
        let predictions: Vec<[f64; 4]> = match predictions {
            Ok(p) => p,
            Err(i) => {
                let h = histories[i];
                return Err(self.bad(format!(
                    "expected purchases cannot be computed for a customer with {} repeat \
                     purchases over {} days (the hypergeometric series did not converge)",
                    h.x, h.t
                )));
            }
        };
        let clv: Vec<f64> = predictions.iter().map(|p| p[3]).collect();
        let scores: ArrayRef = Arc::new(Int32Array::from(quintiles(&clv)));
        let column = |k: usize| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(
                predictions.iter().map(|p| p[k]),
            ))
        };
        let ints = |f: fn(&History) -> f64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                histories.iter().map(|h| f(h) as i64),
            ))
        };
        let amounts: ArrayRef = Arc::new(
            histories
                .iter()
                .zip(amounts.iter())
                .map(|(h, m)| (h.x > 0.0 && m.is_finite()).then_some(*m))
                .collect::<Float64Array>(),
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", ids.data_type().clone(), false),
            Field::new("as_of", as_of.data_type().clone(), true),
            Field::new("repeat_purchases", DataType::Int64, false),
            Field::new("repeat_recency_days", DataType::Int64, false),
            Field::new("observed_days", DataType::Int64, false),
            Field::new("avg_repeat_amount", DataType::Float64, true),
            Field::new("p_alive", DataType::Float64, false),
            Field::new("expected_purchases", DataType::Float64, false),
            Field::new("expected_order_value", DataType::Float64, false),
            Field::new("predicted_clv", DataType::Float64, false),
            Field::new("clv_score", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                ids,
                as_of,
                ints(|h| h.x),
                ints(|h| h.t_x),
                ints(|h| h.t),
                amounts,
                column(0),
                column(1),
                column(2),
                column(3),
                scores,
            ],
        )
        .map_err(|e| Error::Internal(format!("customer_clv batch: {e}")))?;
        cx.metric("clv_predict_seconds", lap(&mut since));
        cx.materialize_batches(&self.output, schema, vec![vec![batch]])
            .await?;

        let model = model_batch(&[
            ("bgnbd", &bgnbd::Params::NAMES[..], &bg_fit, n),
            (
                "gamma_gamma",
                &gamma_gamma::Params::NAMES[..],
                &gg_fit,
                gg_customers,
            ),
        ])?;
        cx.materialize_batches(&c.model_output, model.schema(), vec![vec![model]])
            .await?;
        Ok(())
    }
}

/// Each value's score from 1 to 5 as the RFM scores are given (customer_rfm.sql):
/// `1 + floor(5 * (rank - 1) / n)`, `rank()` ascending over the n values, so equal values share
/// a score and the top fifth of values scores 5.
pub fn quintiles(values: &[f64]) -> Vec<i32> {
    let n = values.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut scores = vec![0; n];
    let mut rank = 1;
    for (i, &row) in order.iter().enumerate() {
        if i > 0 && values[row].total_cmp(&values[order[i - 1]]).is_ne() {
            rank = i + 1;
        }
        scores[row] = (1 + 5 * (rank - 1) / n) as i32;
    }
    scores
}

/// Runs CPU-bound work on the runtime's blocking threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a CLV computation stopped: {e}")))
}

/// The models' table: one row per (model, parameter).
fn model_batch(models: &[(&str, &[&str], &Fit, usize)]) -> Result<RecordBatch> {
    let mut model = Vec::new();
    let mut parameter = Vec::new();
    let mut value = Vec::new();
    let mut std_error = Vec::new();
    let mut ll = Vec::new();
    let mut customers = Vec::new();
    let mut iterations = Vec::new();
    let mut converged = Vec::new();
    for (name, names, f, n) in models {
        for (k, p) in names.iter().enumerate() {
            model.push(*name);
            parameter.push(*p);
            value.push(f.params[k]);
            std_error.push(f.std_errors[k].is_finite().then_some(f.std_errors[k]));
            ll.push(f.log_likelihood);
            customers.push(*n as u64);
            iterations.push(f.iterations);
            converged.push(f.converged);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("parameter", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("std_error", DataType::Float64, true),
        Field::new("log_likelihood", DataType::Float64, false),
        Field::new("customers", DataType::UInt64, false),
        Field::new("iterations", DataType::UInt64, false),
        Field::new("converged", DataType::Boolean, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(model)),
            Arc::new(StringArray::from(parameter)),
            Arc::new(Float64Array::from(value)),
            Arc::new(Float64Array::from(std_error)),
            Arc::new(Float64Array::from(ll)),
            Arc::new(UInt64Array::from(customers)),
            Arc::new(UInt64Array::from(iterations)),
            Arc::new(BooleanArray::from(converged)),
        ],
    )
    .map_err(|e| Error::Internal(format!("clv_model batch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&ClvFactory, &root).unwrap();
        assert_eq!(stage.inputs(), ["orders"]);
        assert_eq!(stage.outputs(), ["customer_clv_values", "clv_model"]);
    }

    #[test]
    fn quintiles_rank_like_the_rfm_scores() {
        // rank() ascending: ties share the lowest rank of their group.
        let values = [5.0, 1.0, 3.0, 3.0, 9.0, 2.0, 7.0, 3.0, 8.0, 0.0];
        // ranks:     7    2    4    4    10   3    8    4    9    1
        assert_eq!(quintiles(&values), [4, 1, 2, 2, 5, 2, 4, 2, 5, 1]);
        assert_eq!(quintiles(&[]), Vec::<i32>::new());
        assert_eq!(quintiles(&[4.0, 4.0, 4.0]), [1, 1, 1]);
    }
}
