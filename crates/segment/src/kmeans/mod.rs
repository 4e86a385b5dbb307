//! `segment.kmeans`: data-driven clusters over chosen, transformed features.
//!
//! The stage (1) selects the rows to cluster (`where`), evaluates each feature's SQL `expr`
//! and sorts the rows by `key`, all as one DataFusion plan; (2) applies the feature transforms
//! in that fixed row order; (3) fits `n_init` k-means++ seeded Lloyd runs over the rows held
//! in one row-major buffer, measuring only the distances Hamerly's bounds leave open
//! ([`memory`]), or, with `passes: plan`, as DataFusion aggregates ([`udf::KMeansPass`]) over
//! the in-memory feature table: the same kernel and sums, in the form a distributed engine
//! runs; (4) when `k` is a range, scores each k by silhouette on a seeded sample and keeps the
//! best; (5) gives every input row its cluster in one projection of the input
//! ([`udf::KMeansAssign`] over the features' expressions and fitted transforms), rows outside
//! `where` getting a null cluster.
//!
//! The same seed gives the same clusters whatever the number of threads: every sum a pass
//! keeps is exact (see [`kernel`]), draws are hashes of row ids, and ties break by index.
//! Clusters are numbered 0..k by size, largest first, unless `previous_centers` names the
//! centers of an earlier run: then each cluster takes the id of the previous center it matches
//! ([`matching`]), so ids keep their meaning from run to run.

mod fit;
/// The per-row arithmetic of a pass, without DataFusion. Public for the micro-benchmarks
/// (crates/cli/benches), not a stable API: its items are documented where they are not plain.
#[allow(missing_docs)]
pub mod kernel;
mod matching;
mod memory;
pub mod transform;
mod udf;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use segflow_core::datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    UInt64Array,
};
use segflow_core::datafusion::arrow::compute::concat;
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema};
use segflow_core::datafusion::arrow::row::{RowConverter, SortField};
use segflow_core::datafusion::arrow::util::display::array_value_to_string;
use segflow_core::datafusion::common::ScalarValue;
use segflow_core::datafusion::functions_aggregate::expr_fn::{avg, count};
use segflow_core::datafusion::logical_expr::{Expr, cast, col, ident, lit, when};
use segflow_core::spec::StageSpec;
use segflow_core::stage::{BuildContext, Stage, StageContext, StageFactory};
use segflow_core::{Error, Result};
use serde::Deserialize;

pub use fit::Passes;
use fit::{Data, Fit};
use transform::{Fitted, Transform};
pub use udf::{KMeansAssign, KMeansPass};

/// The YAML keys of a `segment.kmeans` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KMeansConfig {
    /// A column unique among the clustered rows (the customer id): it fixes the row order, so
    /// results do not depend on how the input was partitioned, and joins clusters back.
    pub key: String,
    /// A SQL predicate choosing the rows to cluster; the others get a null cluster.
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    /// The features, in order.
    pub features: Vec<FeatureConfig>,
    /// A number of clusters, or `{ min, max }` to choose by silhouette.
    pub k: KChoice,
    /// Independent k-means++ runs; the one with the lowest inertia wins.
    #[serde(default = "default_n_init")]
    pub n_init: usize,
    /// Lloyd iterations per run at most.
    #[serde(default = "default_max_iter")]
    pub max_iter: usize,
    /// A run has converged when the centers' total squared shift in one iteration is at most
    /// `tol` times the mean variance of the features (as scikit-learn).
    #[serde(default = "default_tol")]
    pub tol: f64,
    /// Seeds k-means++ and the silhouette sample.
    #[serde(default)]
    pub seed: u64,
    /// Rows in the seeded sample silhouettes are computed on (O(sample^2)); 0 skips them.
    #[serde(default = "default_sample")]
    pub silhouette_sample: usize,
    /// The column holding the cluster number.
    #[serde(default = "default_column")]
    pub column: String,
    /// Table of the chosen clusters: size, centers in original units, label.
    pub centers: String,
    /// Optional table with one row per k tried: inertia, silhouette, iterations, chosen.
    #[serde(default)]
    pub scores: Option<String>,
    /// Where the previous run published its centers table (a Delta location). When it exists,
    /// this run's clusters take the ids of the previous centers they match (the one-to-one
    /// matching with the least total squared distance in this run's feature space), so a
    /// cluster id means the same group of customers from run to run.
    #[serde(default)]
    pub previous_centers: Option<String>,
    /// Where each pass over the data runs: `memory` (one row-major buffer in the segflow
    /// process, a parallel loop), `plan` (a `kmeans_pass` DataFusion aggregate over the
    /// partitions: on a cluster, on the executors) or `auto` (default: `memory` on the
    /// embedded engine, `plan` on a cluster). All give the same clusters.
    #[serde(default)]
    pub passes: Passes,
}

fn default_n_init() -> usize {
    10
}
fn default_max_iter() -> usize {
    300
}
fn default_tol() -> f64 {
    1e-4
}
fn default_sample() -> usize {
    10_000
}
fn default_column() -> String {
    "cluster_id".into()
}

/// `k: 6` or `k: { min: 3, max: 8 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KChoice {
    /// Exactly this many clusters.
    Fixed(usize),
    /// Every k from `min` to `max` (inclusive); the best mean silhouette wins.
    Range {
        /// Smallest k tried (2 or more).
        min: usize,
        /// Largest k tried.
        max: usize,
    },
}

/// One clustering feature.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// Names the feature's columns in the centers table.
    pub name: String,
    /// A SQL expression over the input; defaults to the column `name`.
    #[serde(default)]
    pub expr: Option<String>,
    /// Applied in order: `log1p`, `zscore`, `clip(MIN, MAX)`, `winsorize(LOWER, UPPER)`.
    #[serde(default)]
    pub transforms: Vec<Transform>,
    /// Words for a cluster whose center is low (below -0.5 standard deviations of the
    /// transformed feature), middling or high (above +0.5): "recent", "frequent", ...
    #[serde(default)]
    pub labels: Option<Labels>,
}

/// The words a cluster label is made of.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// For a center more than half a standard deviation below the mean.
    pub low: String,
    /// For a center within half a standard deviation of the mean; none: the feature is left
    /// out of such a cluster's label.
    #[serde(default)]
    pub mid: Option<String>,
    /// For a center more than half a standard deviation above the mean.
    pub high: String,
}

impl FeatureConfig {
    fn expr(&self) -> &str {
        self.expr.as_deref().unwrap_or(&self.name)
    }

    fn labels(&self) -> Labels {
        self.labels.clone().unwrap_or_else(|| Labels {
            low: format!("low {}", self.name),
            mid: None,
            high: format!("high {}", self.name),
        })
    }
}

/// A built k-means stage.
#[derive(Debug)]
pub struct KMeans {
    id: String,
    input: String,
    output: String,
    config: KMeansConfig,
    ks: Vec<usize>,
    previous_centers: Option<url::Url>,
}

pub(crate) struct KMeansFactory;

impl StageFactory for KMeansFactory {
    fn kind(&self) -> &'static str {
        "segment.kmeans"
    }

    fn summary(&self) -> &'static str {
        "adds a k-means `cluster_id` (k-means++, n_init, k by silhouette) and a centers table"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: clusters
kind: segment.kmeans
inputs: [customer_rfm]
output: customer_clusters
key: customer_id
where: "frequency is not null"
features:
  - { name: recency_days, transforms: [log1p, zscore], labels: { low: recent, high: lapsed } }
  - { name: frequency, transforms: [log1p, zscore], labels: { low: infrequent, high: frequent } }
  - { name: monetary, expr: "greatest(monetary, 0)", transforms: ["winsorize(0, 0.99)", log1p, zscore] }
k: { min: 2, max: 8 }
n_init: 10
seed: 42
centers: cluster_centers
scores: cluster_scores
"#
    }

    fn build(&self, spec: &StageSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>> {
        let config: KMeansConfig = spec.config(cx.source)?;
        let err = |m: String| spec.error(cx.source, m);
        let [input] = spec.inputs.as_slice() else {
            return Err(err("needs exactly one table under `inputs`".into()));
        };
        let Some(output) = spec.output.clone() else {
            return Err(err("has no `output`; name the table it produces".into()));
        };
        if config.features.is_empty() {
            return Err(err(
                "has no `features`; add at least one `{ name, expr }`".into()
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for f in &config.features {
            if !crate::rules::is_name(&f.name) {
                return Err(err(format!(
                    "feature name `{}` is not a name (lowercase letters, digits, `_`)",
                    f.name
                )));
            }
            if !names.insert(&f.name) {
                return Err(err(format!("feature `{}` is listed twice", f.name)));
            }
            parse_check(f.expr()).map_err(|e| {
                err(format!(
                    "feature `{}`: `{}` is not a SQL expression: {e}",
                    f.name,
                    f.expr()
                ))
            })?;
        }
        if let Some(w) = &config.filter {
            parse_check(w).map_err(|e| err(format!("`where: {w}` is not a SQL predicate: {e}")))?;
        }
        let ks: Vec<usize> = match config.k {
            KChoice::Fixed(k) => vec![k],
            KChoice::Range { min, max } => (min..=max).collect(),
        };
        if ks.is_empty() || ks[0] < 2 {
            return Err(err(
                "`k` must be 2 or more, or a range `{ min, max }` with 2 <= min <= max".into(),
            ));
        }
        if ks.len() > 1 && config.silhouette_sample < 2 {
            return Err(err(
                "choosing k from a range needs silhouettes; set `silhouette_sample` to 2 or more"
                    .into(),
            ));
        }
        if config.n_init == 0 || config.max_iter == 0 {
            return Err(err("`n_init` and `max_iter` must be at least 1".into()));
        }
        if !(config.tol >= 0.0 && config.tol.is_finite()) {
            return Err(err("`tol` must be a number >= 0".into()));
        }
        if !crate::rules::is_name(&config.column) {
            return Err(err(format!("`column: {}` is not a name", config.column)));
        }
        let previous_centers = match &config.previous_centers {
            Some(p) => Some(
                segflow_core::storage::parse_location(p)
                    .map_err(|e| err(format!("`previous_centers`: {e}")))?,
            ),
            None => None,
        };
        Ok(Box::new(KMeans {
            id: spec.id.clone(),
            input: input.clone(),
            output,
            config,
            ks,
            previous_centers,
        }))
    }
}

fn parse_check(sql: &str) -> std::result::Result<(), String> {
    use segflow_core::datafusion::sql::sqlparser::dialect::GenericDialect;
    use segflow_core::datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[async_trait]
impl Stage for KMeans {
    fn inputs(&self) -> Vec<String> {
        vec![self.input.clone()]
    }

    fn outputs(&self) -> Vec<String> {
        let mut out = vec![self.output.clone(), self.config.centers.clone()];
        out.extend(self.config.scores.clone());
        out
    }

    async fn fingerprint(
        &self,
        ctx: &segflow_core::datafusion::prelude::SessionContext,
        _run: &segflow_core::stage::RunInfo,
        f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> Result<()> {
        // Everything but the centers of an earlier run (`previous_centers`, which number the
        // clusters) is YAML keys.
        if let Some(url) = &self.previous_centers {
            f.add_json(
                "previous_centers version",
                &segflow_core::publish::latest_version(ctx, url).await?,
            )?;
        }
        Ok(())
    }

    fn describe(&self) -> Vec<String> {
        let c = &self.config;
        let mut lines: Vec<String> = c
            .features
            .iter()
            .map(|f| {
                let t: Vec<String> = f.transforms.iter().map(|t| t.to_string()).collect();
                format!("{} <- {} [{}]", f.name, f.expr(), t.join(", "))
            })
            .collect();
        lines.push(format!(
            "k {}, n_init {}, max_iter {}, tol {}, seed {}{}",
            match c.k {
                KChoice::Fixed(k) => k.to_string(),
                KChoice::Range { min, max } => format!("{min}..={max} by silhouette"),
            },
            c.n_init,
            c.max_iter,
            c.tol,
            c.seed,
            c.filter
                .as_ref()
                .map(|w| format!(", rows where {w}"))
                .unwrap_or_default()
        ));
        lines
    }

    async fn run(&self, cx: &StageContext<'_>) -> Result<()> {
        let started = Instant::now();
        let c = &self.config;
        let input = cx.table(&self.input).await?;
        if input
            .schema()
            .index_of_column_by_name(None, &c.column)
            .is_some()
        {
            return Err(self.bad(format!(
                "input `{}` already has a column `{}`; set `column:` to another name",
                self.input, c.column
            )));
        }
        // Compiled once: they select and evaluate the rows to fit, and later give every input
        // row its cluster.
        let (filter, raw) = self.exprs(&input)?;
        let rows = self
            .prepare(cx, input.clone(), filter.clone(), raw.clone())
            .await?;
        let d = c.features.len();
        let n = rows.n;

        let mut scaled = rows.raw.clone();
        let mut fitted: Vec<Vec<Fitted>> = Vec::with_capacity(d);
        for (f, values) in c.features.iter().zip(scaled.iter_mut()) {
            let steps = transform::fit_transform(values, &f.transforms)
                .map_err(|m| self.bad(format!("feature `{}`: {m}", f.name)))?;
            fitted.push(steps);
        }

        // The fitted rows as a run table: passes over the data read it as a plan (on a
        // cluster, from storage), and the per-cluster means below aggregate it.
        let table = format!("{}__kmeans_rows", self.output);
        let (schema, partitions) = rows.batches(cx, &scaled)?;
        cx.materialize_batches(&table, schema, partitions).await?;
        let passes = c.passes.resolve(cx.engine().distributed);
        let ks: Vec<usize> = self.ks.iter().copied().filter(|&k| k <= n).collect();
        let (mut fits, chosen) = if n == 0 {
            cx.warn("no rows to cluster: every row gets a null cluster");
            (Vec::new(), None)
        } else if ks.is_empty() {
            return Err(self.bad(format!(
                "only {n} rows to cluster, fewer than k = {}; lower `k` or widen `where`",
                self.ks[0]
            )));
        } else {
            let data = Data::new(cx.ctx, &table, passes, &scaled, c.seed);
            let sample = data.sample(c.silhouette_sample.min(n));
            let mut fits = data
                .fit_all(&ks, c.n_init, c.max_iter, c.tol)
                .await
                .map_err(|e| self.fit_error(e))?;
            for fit in &mut fits {
                fit.silhouette = sample.silhouette(&fit.centers, fit.k);
            }
            // The best silhouette (ties: the smaller k; an undefined one never wins); a fixed
            // k is simply the only one.
            let score = |i: usize| {
                Some(fits[i].silhouette)
                    .filter(|s| s.is_finite())
                    .unwrap_or(f64::NEG_INFINITY)
            };
            let chosen = (0..fits.len())
                .max_by(|&a, &b| score(a).total_cmp(&score(b)).then(b.cmp(&a)))
                .unwrap_or(0);
            (fits, Some(chosen))
        };
        if let (Some(i), Some(url)) = (chosen, &self.previous_centers) {
            let previous = self.previous_centers(cx, url, &fitted).await?;
            let ids = matching::ids(&fits[i].centers, &previous, d);
            fits[i].renumber(&ids);
        }
        let fit = chosen.map(|i| &fits[i]);

        // Every input row's cluster, in one projection rather than a join back on the key:
        // rows outside `where` get null, the others their nearest center, computed from the
        // same expressions and by the same transforms as the rows the fit saw.
        let cluster = match fit {
            Some(fit) => {
                let e = KMeansAssign::call_raw(&fit.centers, &fit.ids, fitted.clone(), raw);
                match filter {
                    Some(p) => when(p, e)
                        .otherwise(lit(ScalarValue::Int32(None)))
                        .map_err(cx.df_err("assigning clusters"))?,
                    None => e,
                }
            }
            None => lit(ScalarValue::Int32(None)),
        };
        let output = input
            .with_column(&c.column, cluster)
            .map_err(cx.df_err("assigning clusters"))?;
        cx.materialize(&self.output, output).await?;

        // Per-cluster means of the raw feature values, over the table of the fitted rows. Decimal sums are exact, so these are the same whatever the partitioning.
        let features: Vec<Expr> = (0..d).map(|j| col(format!("__f{j}"))).collect();
        let assign = match fit {
            Some(fit) => KMeansAssign::call(&fit.centers, &fit.ids, features),
            None => lit(ScalarValue::Int32(None)),
        };
        let means = cx
            .table(&table)
            .await?
            .select(
                std::iter::once(assign.alias(&c.column))
                    .chain((0..d).map(|j| col(format!("__raw{j}"))))
                    .collect::<Vec<_>>(),
            )
            .map_err(cx.df_err("assigning clusters"))?
            .aggregate(
                vec![col(&c.column)],
                std::iter::once(count(lit(1)).alias("n"))
                    .chain((0..d).map(|j| {
                        cast(
                            avg(cast(col(format!("__raw{j}")), DataType::Decimal128(38, 10))),
                            DataType::Float64,
                        )
                        .alias(format!("m{j}"))
                    }))
                    .collect(),
            )
            .map_err(cx.df_err("averaging features per cluster"))?
            .collect()
            .await
            .map_err(cx.df_err("averaging features per cluster"))?;
        let centers = self.centers_batch(fit, &fitted, &scaled, &means, n)?;
        // Cluster sizes for the run summary, beside the rule segmentations'.
        let mut sizes = serde_json::Map::new();
        let ids = centers.column(0).as_any().downcast_ref::<Int32Array>();
        let labels = centers.column(1).as_any().downcast_ref::<StringArray>();
        let counts = centers.column(2).as_any().downcast_ref::<Int64Array>();
        if let (Some(ids), Some(labels), Some(counts)) = (ids, labels, counts) {
            for i in 0..centers.num_rows() {
                let name = format!("{}: {}", ids.value(i), labels.value(i));
                sizes.insert(name, counts.value(i).into());
            }
        }
        if let Some(total) = cx.rows_of(&self.input) {
            sizes.insert("unclustered".into(), total.saturating_sub(n as u64).into());
        }
        cx.metric("cluster_segments", serde_json::Value::Object(sizes));
        // Small tables built here: on a cluster they travel inside the plan that writes them.
        let df = cx
            .ctx
            .read_batch(centers)
            .map_err(cx.df_err("building the centers table"))?;
        cx.materialize(&c.centers, df).await?;
        if let Some(scores) = &c.scores {
            let df = cx
                .ctx
                .read_batch(scores_batch(&fits, chosen))
                .map_err(cx.df_err("building the scores table"))?;
            cx.materialize(scores, df).await?;
        }

        cx.metric(
            "kmeans",
            serde_json::json!({
                "rows": n,
                "k": fit.map(|f| f.k),
                "inertia": fit.map(|f| f.inertia),
                "silhouette": fit.map(|f| f.silhouette).filter(|s| s.is_finite()),
                "iterations": fit.map(|f| f.iterations),
                "fit_seconds": fits.iter().map(|f| f.seconds).sum::<f64>(),
                "passes": fits.iter().map(|f| f.passes).sum::<usize>(),
                "stage_seconds": started.elapsed().as_secs_f64(),
                "scores": fits.iter().map(|f| serde_json::json!({
                    "k": f.k,
                    "inertia": f.inertia,
                    "silhouette": Some(f.silhouette).filter(|s| s.is_finite()),
                    "iterations": f.iterations,
                    "seconds": f.seconds,
                })).collect::<Vec<_>>(),
            }),
        );
        Ok(())
    }
}

/// The rows to cluster, sorted by key: their keys and raw feature values.
struct Rows {
    n: usize,
    keys: ArrayRef,
    raw: Vec<Vec<f64>>,
}

impl KMeans {
    fn bad(&self, message: String) -> Error {
        Error::BadData {
            stage: self.id.clone(),
            message,
        }
    }

    fn fit_error(&self, e: fit::FitError) -> Error {
        match e {
            fit::FitError::DataFusion(source) => Error::DataFusion {
                stage: self.id.clone(),
                context: "running a k-means pass".into(),
                source,
            },
            fit::FitError::Data(m) => self.bad(m),
        }
    }

    /// The `where` predicate and each feature's `expr` (as `Float64`), compiled against the
    /// input: they select the rows to fit and give every input row its cluster.
    fn exprs(
        &self,
        input: &segflow_core::datafusion::prelude::DataFrame,
    ) -> Result<(Option<Expr>, Vec<Expr>)> {
        let c = &self.config;
        let filter = match &c.filter {
            Some(w) => Some(
                input
                    .parse_sql_expr(w)
                    .map_err(|source| Error::DataFusion {
                        stage: self.id.clone(),
                        context: format!("`where: {w}` does not compile against `{}`", self.input),
                        source,
                    })?,
            ),
            None => None,
        };
        let mut features = Vec::with_capacity(c.features.len());
        for f in &c.features {
            let e = input
                .parse_sql_expr(f.expr())
                .map_err(|source| Error::DataFusion {
                    stage: self.id.clone(),
                    context: format!(
                        "feature `{}`: `{}` does not compile against `{}`",
                        f.name,
                        f.expr(),
                        self.input
                    ),
                    source,
                })?;
            features.push(cast(e, DataType::Float64));
        }
        Ok((filter, features))
    }

    /// Selects (`filter`), evaluates (`features`) and sorts the rows to cluster, and checks
    /// them: a unique non-null key and a finite value for every feature, or an error that says
    /// how many rows fail.
    async fn prepare(
        &self,
        cx: &StageContext<'_>,
        input: segflow_core::datafusion::prelude::DataFrame,
        filter: Option<Expr>,
        features: Vec<Expr>,
    ) -> Result<Rows> {
        let mut df = input;
        if let Some(p) = filter {
            df = df
                .filter(p)
                .map_err(cx.df_err("selecting the rows to cluster"))?;
        }
        let c = &self.config;
        let mut exprs = vec![ident(&c.key).alias("__key")];
        exprs.extend(
            features
                .into_iter()
                .enumerate()
                .map(|(j, e)| e.alias(format!("__raw{j}"))),
        );
        let sorted = df
            .select(exprs)
            .and_then(|df| df.sort(vec![col("__key").sort(true, true)]))
            .map_err(cx.df_err("evaluating the features"))?;
        let key_type = sorted.schema().field(0).data_type().clone();
        let batches = sorted
            .collect()
            .await
            .map_err(cx.df_err("evaluating the features"))?;
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        let d = c.features.len();
        let keys = if batches.is_empty() {
            segflow_core::datafusion::arrow::array::new_empty_array(&key_type)
        } else {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(0).as_ref()).collect();
            concat(&parts).map_err(|e| cx.df_err("collecting keys")(e.into()))?
        };
        if keys.null_count() > 0 {
            return Err(self.bad(format!(
                "key `{}` is null in {} of the {n} rows to cluster; every clustered row needs a \
                 key (narrow `where`)",
                c.key,
                keys.null_count()
            )));
        }
        // Sorted, so duplicates are neighbours.
        if n > 1 {
            let conv = RowConverter::new(vec![SortField::new(key_type)])
                .map_err(|e| cx.df_err("comparing keys")(e.into()))?;
            let rows = conv
                .convert_columns(std::slice::from_ref(&keys))
                .map_err(|e| cx.df_err("comparing keys")(e.into()))?;
            let dups = (1..n).filter(|&i| rows.row(i) == rows.row(i - 1)).count();
            if dups > 0 {
                let i = (1..n)
                    .find(|&i| rows.row(i) == rows.row(i - 1))
                    .unwrap_or(1);
                let example = array_value_to_string(&keys, i).unwrap_or_default();
                return Err(self.bad(format!(
                    "key `{}` is not unique among the rows to cluster: {dups} repeats (e.g. \
                     `{example}`); cluster a table with one row per key",
                    c.key
                )));
            }
        }
        let mut raw = vec![Vec::with_capacity(n); d];
        for b in &batches {
            for (j, values) in raw.iter_mut().enumerate() {
                let a = segflow_core::datafusion::common::cast::as_float64_array(b.column(j + 1))
                    .map_err(cx.df_err("reading features"))?;
                for i in 0..a.len() {
                    values.push(if a.is_null(i) { f64::NAN } else { a.value(i) });
                }
            }
        }
        for (f, values) in c.features.iter().zip(&raw) {
            let bad = values.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                let i = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
                let example = array_value_to_string(&keys, i).unwrap_or_default();
                return Err(self.bad(format!(
                    "feature `{}` (`{}`) is null or not finite in {bad} of the {n} rows to \
                     cluster (e.g. {} = {example}); leave those rows out with `where` or give \
                     them a value in `expr` (coalesce)",
                    f.name,
                    f.expr(),
                    c.key
                )));
            }
        }
        Ok(Rows { n, keys, raw })
    }

    /// The previous run's centers, carried into this run's feature space (its fitted
    /// transforms applied to the centers in original units); empty when there are none yet, or
    /// when they were fitted on other features (with a warning).
    async fn previous_centers(
        &self,
        cx: &StageContext<'_>,
        url: &url::Url,
        fitted: &[Vec<Fitted>],
    ) -> Result<Vec<(i32, Vec<f64>)>> {
        let Some(df) = segflow_core::publish::read_published(cx.ctx, url).await? else {
            return Ok(Vec::new());
        };
        let c = &self.config;
        let read = format!("reading previous centers {url}");
        let mut wanted = vec![c.column.clone()];
        wanted.extend(c.features.iter().map(|f| f.name.clone()));
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|w| df.schema().index_of_column_by_name(None, w).is_none())
            .collect();
        if !missing.is_empty() {
            cx.warn(&format!(
                "previous centers at {url} have no column {}; cluster ids start afresh",
                missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return Ok(Vec::new());
        }
        let batches = df
            .select(
                std::iter::once(cast(ident(&c.column), DataType::Int32))
                    .chain(
                        c.features
                            .iter()
                            .map(|f| cast(ident(&f.name), DataType::Float64)),
                    )
                    .collect::<Vec<Expr>>(),
            )
            .map_err(cx.df_err(&read))?
            .collect()
            .await
            .map_err(cx.df_err(&read))?;
        let mut out = Vec::new();
        for b in &batches {
            let ids = segflow_core::datafusion::common::cast::as_int32_array(b.column(0))
                .map_err(cx.df_err(&read))?;
            for i in 0..b.num_rows() {
                let mut center = Vec::with_capacity(fitted.len());
                for (j, steps) in fitted.iter().enumerate() {
                    let a =
                        segflow_core::datafusion::common::cast::as_float64_array(b.column(j + 1))
                            .map_err(cx.df_err(&read))?;
                    center.push(steps.iter().fold(a.value(i), |v, s| s.apply(v)));
                }
                if ids.is_valid(i) && center.iter().all(|v| v.is_finite()) {
                    out.push((ids.value(i), center));
                }
            }
        }
        Ok(out)
    }

    /// One row per cluster: id, label, size, share, within-cluster sum of squares, and per
    /// feature the center in original units, the members' mean and the center as clustered.
    fn centers_batch(
        &self,
        fit: Option<&Fit>,
        fitted: &[Vec<Fitted>],
        scaled: &[Vec<f64>],
        means: &[RecordBatch],
        n: usize,
    ) -> Result<RecordBatch> {
        let c = &self.config;
        let d = c.features.len();
        let k = fit.map_or(0, |f| f.k);
        // Sizes and raw means by cluster id, from the aggregate over the final assignment (so
        // sizes are exactly the published cluster_id counts).
        let mut mean = vec![vec![f64::NAN; d]; k];
        let mut sizes = vec![0i64; k];
        let position = |id: i32| fit.and_then(|f| f.ids.iter().position(|&x| x == id));
        for b in means {
            let ids = b.column(0).as_any().downcast_ref::<Int32Array>();
            let counts = b.column(1).as_any().downcast_ref::<Int64Array>();
            for i in 0..b.num_rows() {
                let Some(at) = ids
                    .filter(|a| a.is_valid(i))
                    .and_then(|a| position(a.value(i)))
                else {
                    continue;
                };
                sizes[at] = counts.map_or(0, |a| a.value(i));
                for (j, m) in mean[at].iter_mut().enumerate() {
                    if let Some(a) = b.column(j + 2).as_any().downcast_ref::<Float64Array>() {
                        *m = a.value(i);
                    }
                }
            }
        }
        // Label words compare each center with the spread of the feature as clustered.
        let spread: Vec<(f64, f64)> = scaled
            .iter()
            .map(|v| {
                let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
                let s = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len().max(1) as f64)
                    .sqrt();
                (m, if s > 0.0 { s } else { 1.0 })
            })
            .collect();
        let labels = fit
            .map(|f| labels(f, &c.features, &spread))
            .unwrap_or_default();

        let mut fields = vec![
            Field::new(&c.column, DataType::Int32, false),
            Field::new("label", DataType::Utf8, false),
            Field::new("customers", DataType::Int64, false),
            Field::new("share", DataType::Float64, false),
            Field::new("within_ss", DataType::Float64, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(
                fit.map(|f| f.ids.clone()).unwrap_or_default(),
            )),
            Arc::new(StringArray::from(labels)),
            Arc::new(Int64Array::from(sizes.clone())),
            Arc::new(Float64Array::from_iter_values(
                sizes.iter().map(|&s| s as f64 / n as f64),
            )),
            Arc::new(Float64Array::from_iter_values(
                fit.map(|f| f.within.clone()).unwrap_or_default(),
            )),
        ];
        for (j, f) in c.features.iter().enumerate() {
            let at = |i: usize| fit.map_or(f64::NAN, |fit| fit.centers[i * d + j]);
            fields.push(Field::new(&f.name, DataType::Float64, false));
            columns.push(Arc::new(Float64Array::from_iter_values(
                (0..k).map(|i| transform::invert_all(&fitted[j], at(i))),
            )));
            fields.push(Field::new(
                format!("{}_mean", f.name),
                DataType::Float64,
                true,
            ));
            columns.push(Arc::new(Float64Array::from_iter(
                (0..k).map(|i| Some(mean[i][j]).filter(|m| m.is_finite())),
            )));
            fields.push(Field::new(
                format!("{}_scaled", f.name),
                DataType::Float64,
                false,
            ));
            columns.push(Arc::new(Float64Array::from_iter_values((0..k).map(at))));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::Internal(format!("building the centers table: {e}")))
    }
}

/// A readable label per cluster, "recent, frequent, high spend": each feature's word for
/// where the center sits against the feature's spread (more than half a standard deviation
/// below the mean: low; above: high; else mid, if the feature has a mid word). Labels are made
/// unique with a " (2)" suffix.
fn labels(fit: &Fit, features: &[FeatureConfig], spread: &[(f64, f64)]) -> Vec<String> {
    let d = features.len();
    let mut out: Vec<String> = Vec::with_capacity(fit.k);
    for i in 0..fit.k {
        let words: Vec<String> = features
            .iter()
            .enumerate()
            .filter_map(|(j, f)| {
                let l = f.labels();
                let z = (fit.centers[i * d + j] - spread[j].0) / spread[j].1;
                if z < -0.5 {
                    Some(l.low)
                } else if z > 0.5 {
                    Some(l.high)
                } else {
                    l.mid
                }
            })
            .collect();
        let base = if words.is_empty() {
            "average".to_string()
        } else {
            words.join(", ")
        };
        let mut label = base.clone();
        let mut nth = 1;
        while out.contains(&label) {
            nth += 1;
            label = format!("{base} ({nth})");
        }
        out.push(label);
    }
    out
}

fn scores_batch(fits: &[Fit], chosen: Option<usize>) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("k", DataType::Int32, false),
        Field::new("inertia", DataType::Float64, false),
        Field::new("silhouette", DataType::Float64, true),
        Field::new("iterations", DataType::Int32, false),
        Field::new("chosen", DataType::Boolean, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(
            fits.iter().map(|f| f.k as i32),
        )),
        Arc::new(Float64Array::from_iter_values(
            fits.iter().map(|f| f.inertia),
        )),
        Arc::new(Float64Array::from_iter(
            fits.iter()
                .map(|f| Some(f.silhouette).filter(|s| s.is_finite())),
        )),
        Arc::new(Int32Array::from_iter_values(
            fits.iter().map(|f| f.iterations as i32),
        )),
        Arc::new(BooleanArray::from_iter(
            (0..fits.len()).map(|i| Some(Some(i) == chosen)),
        )),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("scores columns match their schema")
}

impl Rows {
    /// The table passes read: row id, key, raw and transformed features, in key order, as
    /// batches split into contiguous partitions (one per target partition).
    fn batches(
        &self,
        cx: &StageContext<'_>,
        scaled: &[Vec<f64>],
    ) -> Result<(Arc<Schema>, Vec<Vec<RecordBatch>>)> {
        let d = self.raw.len();
        let mut fields = vec![
            Field::new("__row", DataType::UInt64, false),
            Field::new("__key", self.keys.data_type().clone(), false),
        ];
        fields.extend((0..d).map(|j| Field::new(format!("__raw{j}"), DataType::Float64, false)));
        fields.extend((0..d).map(|j| Field::new(format!("__f{j}"), DataType::Float64, false)));
        let schema = Arc::new(Schema::new(fields));
        let parts = cx.ctx.copied_config().target_partitions().max(1);
        let batch_rows = 8192;
        let batches = self.n.div_ceil(batch_rows);
        let per_part = batches.div_ceil(parts).max(1);
        let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
        for b in 0..batches {
            let (lo, hi) = (b * batch_rows, ((b + 1) * batch_rows).min(self.n));
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(UInt64Array::from_iter_values(lo as u64..hi as u64)),
                self.keys.slice(lo, hi - lo),
            ];
            columns.extend(
                self.raw
                    .iter()
                    .chain(scaled)
                    .map(|v| Arc::new(Float64Array::from(v[lo..hi].to_vec())) as ArrayRef),
            );
            let batch = RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| Error::Internal(format!("building the k-means table: {e}")))?;
            partitions[b / per_part].push(batch);
        }
        Ok((schema, partitions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&KMeansFactory, &root).unwrap();
        assert_eq!(
            stage.outputs(),
            ["customer_clusters", "cluster_centers", "cluster_scores"]
        );
        assert!(stage.describe()[2].contains("winsorize(0, 0.99), log1p, zscore"));
    }

    #[test]
    fn bad_configs_say_what_to_change() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let build = |extra: &str| {
            let yaml = format!(
                "id: c\nkind: segment.kmeans\ninputs: [t]\noutput: o\nkey: id\ncenters: cc\n{extra}"
            );
            segflow_core::stage::build_yaml(&KMeansFactory, &root, &yaml)
                .unwrap_err()
                .to_string()
        };
        let e = build("features: [{ name: x }]\nk: 1\n");
        assert!(e.contains("`k` must be 2 or more"), "{e}");
        let e = build("features: [{ name: x, transforms: [log] }]\nk: 3\n");
        assert!(e.contains("unknown transform `log`"), "{e}");
        let e = build("features: [{ name: x, expr: \"a +\" }]\nk: 3\n");
        assert!(
            e.contains("feature `x`: `a +` is not a SQL expression"),
            "{e}"
        );
        let e = build("features: [{ name: x }]\nk: { min: 2, max: 4 }\nsilhouette_sample: 0\n");
        assert!(e.contains("needs silhouettes"), "{e}");
    }
}
