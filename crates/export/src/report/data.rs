//! What the report shows, read from one published run: small aggregates of its tables, each a
//! [`Rows`] of [`Cell`]s, so the page prints the tables' own values (decimals as written, not
//! re-rounded floats).

use std::collections::BTreeMap;

use segflow_core::datafusion::arrow::array::Array;
use segflow_core::datafusion::arrow::util::display::array_value_to_string;
use segflow_core::datafusion::common::ScalarValue;
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::{Error, Result};

use crate::published::Published;

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL null.
    Null,
    /// An integer column.
    Int(i64),
    /// A floating point column.
    Float(f64),
    /// A decimal, as written (`1234.50`), and its value.
    Decimal(String, f64),
    /// Text, dates and timestamps as text.
    Text(String),
    /// A boolean.
    Bool(bool),
}

impl Cell {
    /// The value for machines (`data-value`): integers and decimals exactly as stored,
    /// floats in the shortest form that reads back to the same double; empty for null.
    pub fn raw(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => f.to_string(),
            Cell::Decimal(s, _) | Cell::Text(s) => s.clone(),
            Cell::Bool(b) => b.to_string(),
        }
    }

    /// The value as a number, when it is one.
    pub fn num(&self) -> Option<f64> {
        match self {
            Cell::Int(i) => Some(*i as f64),
            Cell::Float(f) => Some(*f),
            Cell::Decimal(_, f) => Some(*f),
            _ => None,
        }
    }

    /// The value as text (numbers and booleans too); `None` for null.
    pub fn text(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            other => Some(other.raw()),
        }
    }

    fn of(array: &dyn Array, row: usize) -> Result<Cell> {
        if array.is_null(row) {
            return Ok(Cell::Null);
        }
        let scalar = ScalarValue::try_from_array(array, row)
            .map_err(|e| Error::Internal(format!("reading a report value: {e}")))?;
        let shown = || {
            array_value_to_string(array, row)
                .map_err(|e| Error::Internal(format!("reading a report value: {e}")))
        };
        Ok(match scalar {
            ScalarValue::Int8(Some(v)) => Cell::Int(v.into()),
            ScalarValue::Int16(Some(v)) => Cell::Int(v.into()),
            ScalarValue::Int32(Some(v)) => Cell::Int(v.into()),
            ScalarValue::Int64(Some(v)) => Cell::Int(v),
            ScalarValue::UInt8(Some(v)) => Cell::Int(v.into()),
            ScalarValue::UInt16(Some(v)) => Cell::Int(v.into()),
            ScalarValue::UInt32(Some(v)) => Cell::Int(v.into()),
            ScalarValue::UInt64(Some(v)) => Cell::Int(v as i64),
            ScalarValue::Float32(Some(v)) => Cell::Float(v.into()),
            ScalarValue::Float64(Some(v)) => Cell::Float(v),
            ScalarValue::Boolean(Some(v)) => Cell::Bool(v),
            ScalarValue::Decimal128(Some(_), _, _) | ScalarValue::Decimal256(Some(_), _, _) => {
                let s = shown()?;
                let f = s.parse().unwrap_or(f64::NAN);
                Cell::Decimal(s, f)
            }
            _ => Cell::Text(shown()?),
        })
    }
}

/// A query's result: column names and rows.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<Cell>>,
}

impl Rows {
    /// The index of column `name`.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Row `r`'s value of column `name` (null when there is no such column).
    pub fn get(&self, r: usize, name: &str) -> &Cell {
        static NULL: Cell = Cell::Null;
        self.col(name)
            .and_then(|c| self.rows.get(r).and_then(|row| row.get(c)))
            .unwrap_or(&NULL)
    }

    /// Column `column` of the first row whose column `key` is `value`, as a number.
    pub fn num_where(&self, key: &str, value: &str, column: &str) -> Option<f64> {
        (0..self.rows.len())
            .find(|r| self.get(*r, key).text().as_deref() == Some(value))
            .and_then(|r| self.get(r, column).num())
    }

    /// The rows whose column `name` is `value`, as a new `Rows`.
    pub fn filter(&self, name: &str, value: &str) -> Rows {
        let Some(c) = self.col(name) else {
            return Rows {
                columns: self.columns.clone(),
                rows: Vec::new(),
            };
        };
        Rows {
            columns: self.columns.clone(),
            rows: self
                .rows
                .iter()
                .filter(|r| r[c].text().as_deref() == Some(value))
                .cloned()
                .collect(),
        }
    }
}

/// Runs `sql` on `ctx` and collects its rows.
pub async fn query(ctx: &SessionContext, sql: &str) -> Result<Rows> {
    let fail = |e: segflow_core::datafusion::error::DataFusionError| Error::DataFusion {
        stage: "report".into(),
        context: format!(
            "report query `{}`",
            sql.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
        source: e,
    };
    let df = ctx.sql(sql).await.map_err(fail)?;
    let columns = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let batches = df.collect().await.map_err(fail)?;
    let mut rows = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .map(|a| Cell::of(a.as_ref(), r))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
    }
    Ok(Rows { columns, rows })
}

/// The run the report is about.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The published run, or `None` when the tables were read at their latest versions.
    pub run_id: Option<String>,
    /// The pipeline's name.
    pub pipeline: String,
    /// When the run published (the pointer's time).
    pub published_at: Option<String>,
    /// The snapshot's day (customer_segments' as_of).
    pub as_of: Option<String>,
}

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct ReportData {
    /// The run.
    pub run: RunInfo,
    /// Customers in the snapshot.
    pub customers: Cell,
    /// Their revenue (sum of monetary).
    pub revenue: Cell,
    /// Quarantined rows of the run's ingest by table and reason: `table_name`, `reason`,
    /// `rows`; `None` without a published quarantine.
    pub quarantine: Option<Rows>,
    /// segment_profiles, every column.
    pub profiles: Rows,
    /// segment_catalog, ordered as the YAML lists the segments; `None` when not published.
    pub catalog: Option<Rows>,
    /// The segmentations in the order to show them: the catalog's, then the others (cluster).
    pub segmentations: Vec<String>,
    /// `r_score`, `f_score`, `rfm_segment`, `customers`.
    pub rfm_grid: Rows,
    /// This snapshot's segment_migrations: `segmentation`, `from_as_of`, `from_segment`,
    /// `to_segment`, `customers`.
    pub migrations: Option<Rows>,
    /// Sizes per as_of from every segment_migrations partition: `segmentation`, `as_of`,
    /// `segment`, `customers`.
    pub history: Option<Rows>,
    /// cluster_scores by k.
    pub cluster_scores: Option<Rows>,
    /// cluster_centers by cluster_id.
    pub cluster_centers: Option<Rows>,
    /// campaign_performance of the top campaigns (by sends) in `campaign_segmentation`.
    pub campaigns: Option<Rows>,
    /// The top campaigns, most sends first.
    pub top_campaigns: Vec<String>,
    /// The segmentation campaigns are broken down by.
    pub campaign_segmentation: String,
    /// customer_clv's p_alive in tenths: `bin` (0..9), `customers`; `None` without CLV.
    pub p_alive: Option<Rows>,
}

/// How many campaigns the report compares.
pub const TOP_CAMPAIGNS: usize = 8;

/// The tables the report reads; the first two are required.
const TABLES: &[&str] = &[
    "customer_segments",
    "segment_profiles",
    "segment_catalog",
    "segment_migrations",
    "cluster_scores",
    "cluster_centers",
    "campaign_performance",
    "customer_clv",
    "quarantine",
];

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl ReportData {
    /// Reads the report's data from the published run's tables (each at the version the
    /// pointer names), in a session of its own that shares `ctx`'s object stores.
    pub async fn load(ctx: &SessionContext, published: &Published) -> Result<ReportData> {
        let q = SessionContext::new_with_config_rt(ctx.copied_config(), ctx.runtime_env());
        let mut have = BTreeMap::new();
        for name in TABLES {
            if published.pointer.tables.contains_key(*name) {
                let t = published.table(ctx, name).await?;
                q.register_table(*name, t.rows.into_view())
                    .map_err(|e| Error::Internal(format!("registering `{name}`: {e}")))?;
                have.insert(*name, ());
            } else if TABLES[..2].contains(name) {
                return Err(Error::BadData {
                    stage: "report".into(),
                    message: format!(
                        "the published run has no `{name}`; the report needs customer_segments \
                         and segment_profiles (run the default pipeline, or publish both)"
                    ),
                });
            }
        }
        let has = |t: &str| have.contains_key(t);

        let totals = query(
            &q,
            "select count(*) as customers, sum(coalesce(monetary, 0)) as revenue, \
             cast(max(as_of) as varchar) as as_of from customer_segments",
        )
        .await?;
        let as_of = totals.get(0, "as_of").text();
        let run = RunInfo {
            run_id: published
                .from_pointer
                .then(|| published.pointer.run_id.clone()),
            pipeline: published.pointer.pipeline.clone(),
            published_at: published
                .from_pointer
                .then(|| published.pointer.published_at.to_rfc3339()),
            as_of: as_of.clone(),
        };

        let quarantine = if has("quarantine") {
            let filter = match &run.run_id {
                Some(id) => format!("where run_id = {}", quote(id)),
                None => String::new(),
            };
            Some(
                query(
                    &q,
                    &format!(
                        "select table_name, reason, count(*) as rows from quarantine {filter} \
                         group by table_name, reason order by rows desc, table_name, reason"
                    ),
                )
                .await?,
            )
        } else {
            None
        };

        let profiles = query(&q, "select * from segment_profiles").await?;
        let catalog = if has("segment_catalog") {
            Some(
                query(
                    &q,
                    "select * from segment_catalog order by segmentation_order, rule_order",
                )
                .await?,
            )
        } else {
            None
        };
        let mut segmentations: Vec<String> = Vec::new();
        let mut add = |s: Option<String>| {
            if let Some(s) = s
                && !segmentations.contains(&s)
            {
                segmentations.push(s);
            }
        };
        if let Some(c) = &catalog {
            (0..c.rows.len()).for_each(|r| add(c.get(r, "segmentation").text()));
        }
        (0..profiles.rows.len()).for_each(|r| add(profiles.get(r, "segmentation").text()));

        let rfm_grid = query(
            &q,
            "select r_score, f_score, rfm_segment, count(*) as customers from customer_segments \
             where r_score is not null and f_score is not null \
             group by r_score, f_score, rfm_segment order by r_score desc, f_score",
        )
        .await?;

        let (migrations, history) = match (has("segment_migrations"), &as_of) {
            (true, Some(day)) => (
                Some(
                    query(
                        &q,
                        &format!(
                            "select segmentation, cast(from_as_of as varchar) as from_as_of, \
                             from_segment, to_segment, customers from segment_migrations \
                             where to_as_of = cast({} as date) \
                             order by segmentation, from_segment, to_segment",
                            quote(day)
                        ),
                    )
                    .await?,
                ),
                Some(
                    query(
                        &q,
                        "select segmentation, cast(to_as_of as varchar) as as_of, \
                         to_segment as segment, sum(customers) as customers \
                         from segment_migrations group by segmentation, to_as_of, to_segment \
                         order by segmentation, as_of, segment",
                    )
                    .await?,
                ),
            ),
            _ => (None, None),
        };

        let cluster_scores = if has("cluster_scores") {
            Some(query(&q, "select * from cluster_scores order by k").await?)
        } else {
            None
        };
        let cluster_centers = if has("cluster_centers") {
            Some(query(&q, "select * from cluster_centers order by cluster_id").await?)
        } else {
            None
        };

        let campaign_segmentation = "rfm".to_string();
        let (campaigns, top_campaigns) = if has("campaign_performance") {
            let top = query(
                &q,
                &format!(
                    "select campaign_id, sum(sends) as sends from campaign_performance \
                     where segmentation = {} group by campaign_id \
                     order by sends desc, campaign_id desc limit {TOP_CAMPAIGNS}",
                    quote(&campaign_segmentation)
                ),
            )
            .await?;
            let ids: Vec<String> = (0..top.rows.len())
                .filter_map(|r| top.get(r, "campaign_id").text())
                .collect();
            let list = if ids.is_empty() {
                "null".to_string()
            } else {
                ids.iter().map(|i| quote(i)).collect::<Vec<_>>().join(", ")
            };
            let rows = query(
                &q,
                &format!(
                    "select campaign_id, segment, sends, conversions, conversion_rate, lift \
                     from campaign_performance \
                     where segmentation = {} and campaign_id in ({list}) \
                     order by campaign_id, segment",
                    quote(&campaign_segmentation)
                ),
            )
            .await?;
            (Some(rows), ids)
        } else {
            (None, Vec::new())
        };

        let p_alive = if has("customer_clv") {
            Some(
                query(
                    &q,
                    "select least(cast(floor(p_alive * 10) as int), 9) as bin, \
                     count(*) as customers from customer_clv where p_alive is not null \
                     group by 1 order by 1",
                )
                .await?,
            )
        } else {
            None
        };

        Ok(ReportData {
            run,
            customers: totals.get(0, "customers").clone(),
            revenue: totals.get(0, "revenue").clone(),
            quarantine,
            profiles,
            catalog,
            segmentations,
            rfm_grid,
            migrations,
            history,
            cluster_scores,
            cluster_centers,
            campaigns,
            top_campaigns,
            campaign_segmentation,
            p_alive,
        })
    }

    /// The segments of `segmentation` in the order to list them: the catalog's (rule order),
    /// then any others in segment_profiles by size.
    pub fn segments(&self, segmentation: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(c) = &self.catalog {
            let c = c.filter("segmentation", segmentation);
            out.extend((0..c.rows.len()).filter_map(|r| c.get(r, "segment").text()));
        }
        let p = self.profiles.filter("segmentation", segmentation);
        let mut rest: Vec<(i64, String)> = (0..p.rows.len())
            .filter_map(|r| {
                let s = p.get(r, "segment").text()?;
                let n = p.get(r, "customers").num().unwrap_or(0.0) as i64;
                (!out.contains(&s)).then_some((n, s))
            })
            .collect();
        rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        out.extend(rest.into_iter().map(|(_, s)| s));
        out
    }
}
