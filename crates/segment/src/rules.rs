//! `segment.rules`: ordered predicates to a `<segmentation>_segment` column, for one
//! segmentation or several at once.
//!
//! Several segmentations in one stage (`segmentations:`) are one projection over the input,
//! materialized once: every rule of every segmentation is evaluated in the same pass, instead of
//! one stage per segmentation each rewriting the whole (wide) table to add one column.
//!
//! Rules may read the columns of several per-customer tables: with more than one input and a
//! `key`, each later input is left-joined to the first on the key in that same pass (a row
//! without a match reads nulls), so a table computed apart, such as the CLV predictions, needs
//! no stage of its own to be joined to the features first.

use async_trait::async_trait;
use segflow_core::datafusion::arrow::array::{Array, Int64Array};
use segflow_core::datafusion::arrow::util::display::array_value_to_string;
use segflow_core::datafusion::functions_aggregate::expr_fn::{count, sum};
use segflow_core::datafusion::logical_expr::{Expr, ident, lit, when};
use segflow_core::datafusion::sql::sqlparser::dialect::GenericDialect;
use segflow_core::datafusion::sql::sqlparser::parser::Parser;
use segflow_core::spec::StageSpec;
use segflow_core::stage::{BuildContext, Stage, StageContext, StageFactory};
use segflow_core::{Error, Result};
use serde::Deserialize;

/// The YAML keys of a `segment.rules` stage: one segmentation (`segmentation`, `rules`,
/// `default`) or several (`segmentations`, a list of those three keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// The segmentation's name; the stage adds the column `<segmentation>_segment`.
    #[serde(default)]
    pub segmentation: Option<String>,
    /// Tried in order; the first whose `when` is true gives the row its segment.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The segment of rows no rule matches.
    #[serde(default)]
    pub default: Option<DefaultSegment>,
    /// Several segmentations, each `{ segmentation, rules, default }`, added in one pass.
    #[serde(default)]
    pub segmentations: Vec<Segmentation>,
    /// With several `inputs`: the column they share, unique in every input after the first.
    /// The output has the first input's rows and columns, then the columns of each later input
    /// that no earlier one has, matched on the key.
    #[serde(default)]
    pub key: Option<String>,
    /// A second output: the segment catalog's definitions, one row per (segmentation,
    /// segment) with its rule as written, description and strategy ([`catalog_schema`]).
    #[serde(default)]
    pub catalog: Option<String>,
}

/// One segmentation: `<segmentation>_segment` from its rules, first match wins, else `default`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segmentation {
    /// The segmentation's name; the stage adds the column `<segmentation>_segment`.
    pub segmentation: String,
    /// Tried in order; the first whose `when` is true gives the row its segment.
    pub rules: Vec<Rule>,
    /// The segment of rows no rule matches.
    pub default: DefaultSegment,
}

/// The default segment: its name (`default: low`), or its name with what the catalog says
/// about it (`default: { segment: low, description: ..., strategy: ... }`).
#[derive(Debug, Clone)]
pub enum DefaultSegment {
    /// Just the name.
    Name(String),
    /// The name, description and strategy.
    Described(Described),
}

// By hand rather than `untagged`, whose error for a mistyped key is "data did not match any
// variant": this one names the key.
impl<'de> Deserialize<'de> for DefaultSegment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use segflow_core::yaml::{self, Value};
        use serde::de::Error as _;
        match Value::deserialize(d)? {
            Value::String(name) => Ok(DefaultSegment::Name(name)),
            v @ Value::Mapping(_) => yaml::from_value(v)
                .map(DefaultSegment::Described)
                .map_err(|e| D::Error::custom(format!("`default`: {e}"))),
            _ => Err(D::Error::custom(
                "`default` is a segment name, or `{ segment, description, strategy }`",
            )),
        }
    }
}

/// A default segment with its catalog entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Described {
    /// Segment name given to rows no rule matches.
    pub segment: String,
    /// What the segment is, for the catalog and the report.
    #[serde(default)]
    pub description: Option<String>,
    /// What to do with it: the action, the offer and the channel.
    #[serde(default)]
    pub strategy: Option<String>,
}

impl DefaultSegment {
    /// The default as a rule that always matches, with its catalog text.
    fn as_rule(&self) -> Rule {
        match self {
            DefaultSegment::Name(n) => Rule {
                segment: n.clone(),
                when: "true".into(),
                description: None,
                strategy: None,
            },
            DefaultSegment::Described(d) => Rule {
                segment: d.segment.clone(),
                when: "true".into(),
                description: d.description.clone(),
                strategy: d.strategy.clone(),
            },
        }
    }

    /// The segment's name.
    pub fn segment(&self) -> &str {
        match self {
            DefaultSegment::Name(n) => n,
            DefaultSegment::Described(d) => &d.segment,
        }
    }
}

impl Segmentation {
    /// The column this segmentation adds.
    pub fn column(&self) -> String {
        format!("{}_segment", self.segmentation)
    }
}

/// One rule: `{ segment: champions, when: "r_score = 5 and f_score >= 4" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Segment name given to matching rows.
    pub segment: String,
    /// A SQL predicate over the input table's columns. Null counts as false.
    pub when: String,
    /// What the segment is, for the catalog and the report (`segflow validate` warns
    /// without one).
    #[serde(default)]
    pub description: Option<String>,
    /// What to do with it: the recommended action, offer and channel, e.g. "win-back: a
    /// personal offer on their top category, by email, within 2 weeks".
    #[serde(default)]
    pub strategy: Option<String>,
}

/// A built rule stage: one or more segmentations over one input, or several joined on a key.
#[derive(Debug)]
pub struct Rules {
    id: String,
    inputs: Vec<String>,
    key: Option<String>,
    output: String,
    catalog: Option<String>,
    segmentations: Vec<Segmentation>,
}

/// The segmentations a config names, in either form, or what is wrong with it.
fn segmentations_of(config: RulesConfig) -> std::result::Result<Vec<Segmentation>, String> {
    let single =
        config.segmentation.is_some() || !config.rules.is_empty() || config.default.is_some();
    match (single, config.segmentations.is_empty()) {
        (true, false) => Err(
            "has both `segmentations` and a top-level `segmentation`/`rules`/`default`; \
             use one form: move the top-level keys into the list"
                .into(),
        ),
        (false, true) => Err(
            "has no segmentation; give `segmentation`, `rules` and `default`, or a list of them \
             under `segmentations`"
                .into(),
        ),
        (false, false) => Ok(config.segmentations),
        (true, true) => {
            let segmentation = config
                .segmentation
                .ok_or("has `rules` but no `segmentation`; name the segmentation")?;
            let default = config.default.ok_or_else(|| {
                format!(
                    "segmentation `{segmentation}` has no `default`; name the segment of rows no rule matches"
                )
            })?;
            Ok(vec![Segmentation {
                segmentation,
                rules: config.rules,
                default,
            }])
        }
    }
}

pub(crate) struct RulesFactory;

impl StageFactory for RulesFactory {
    fn kind(&self) -> &'static str {
        "segment.rules"
    }

    fn summary(&self) -> &'static str {
        "adds `<segmentation>_segment` from ordered SQL predicates (first match wins) and a default"
    }

    fn example_yaml(&self) -> &'static str {
        r#"id: value_tiers
kind: segment.rules
inputs: [customer_rfm]
output: customer_value_tiers
segmentation: value_tier
rules:
  - { segment: high, when: "m_score >= 4" }
  - { segment: mid, when: "m_score >= 2" }
default: low
checks: [{ not_null: [value_tier_segment] }]
"#
    }

    fn build(&self, spec: &StageSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>> {
        let config: RulesConfig = spec.config(cx.source)?;
        let key = config.key.clone();
        let catalog = config.catalog.clone();
        match (spec.inputs.len(), &key) {
            (0, _) => {
                return Err(spec.error(cx.source, "needs a table under `inputs`"));
            }
            (1, Some(_)) => {
                return Err(spec.error(
                    cx.source,
                    "has a `key` but one input; `key` joins several `inputs`, so drop it",
                ));
            }
            (2.., None) => {
                return Err(spec.error(
                    cx.source,
                    "has several `inputs` but no `key`; name the column they are joined on, \
                     e.g. `key: customer_id`",
                ));
            }
            _ => {}
        }
        let Some(output) = spec.output.clone() else {
            return Err(spec.error(cx.source, "has no `output`; name the table it produces"));
        };
        let segmentations = segmentations_of(config).map_err(|m| spec.error(cx.source, m))?;
        let mut seen = std::collections::BTreeSet::new();
        for s in &segmentations {
            check_segmentation(s).map_err(|m| spec.error(cx.source, m))?;
            if !seen.insert(s.segmentation.as_str()) {
                return Err(spec.error(
                    cx.source,
                    format!(
                        "segmentation `{}` appears twice; each adds its own column",
                        s.segmentation
                    ),
                ));
            }
        }
        Ok(Box::new(Rules {
            id: spec.id.clone(),
            inputs: spec.inputs.clone(),
            key,
            output,
            catalog,
            segmentations,
        }))
    }
}

/// A segmentation's name, segment names and the syntax of its predicates; column names are
/// checked when the input's schema is known.
fn check_segmentation(s: &Segmentation) -> std::result::Result<(), String> {
    let name = &s.segmentation;
    if !is_name(name) {
        return Err(format!(
            "segmentation `{name}` is not a name (lowercase letters, digits, `_`)"
        ));
    }
    if s.rules.is_empty() {
        return Err(format!(
            "segmentation `{name}` has no `rules`; add at least one `{{ segment, when }}`"
        ));
    }
    let default = s.default.as_rule();
    for (i, rule) in s.rules.iter().chain(std::iter::once(&default)).enumerate() {
        if rule.segment.trim().is_empty() {
            return Err(format!(
                "segmentation `{name}`: rule {} has an empty segment name",
                i + 1
            ));
        }
        Parser::new(&GenericDialect {})
            .try_with_sql(&rule.when)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| {
                format!(
                    "segmentation `{name}`: rule {} (segment `{}`): `when: {}` is not a SQL predicate: {e}",
                    i + 1,
                    rule.segment,
                    rule.when
                )
            })?;
    }
    Ok(())
}

pub(crate) fn is_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[async_trait]
impl Stage for Rules {
    fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn outputs(&self) -> Vec<String> {
        std::iter::once(self.output.clone())
            .chain(self.catalog.clone())
            .collect()
    }

    fn warnings(&self) -> Vec<String> {
        self.catalog_rows()
            .into_iter()
            .filter(|r| r.description.is_none())
            .map(|r| {
                format!(
                    "segmentation `{}`: segment `{}` has no description; add `description:` \
                     (and `strategy:`) to its rule, so the catalog and the report say what it is",
                    r.segmentation, r.segment
                )
            })
            .collect()
    }

    async fn fingerprint(
        &self,
        _ctx: &segflow_core::datafusion::prelude::SessionContext,
        _run: &segflow_core::stage::RunInfo,
        _f: &mut segflow_core::fingerprint::Fingerprint,
    ) -> Result<()> {
        // The rules are all YAML keys.
        Ok(())
    }

    fn describe(&self) -> Vec<String> {
        let several = self.segmentations.len() > 1;
        let mut lines = Vec::new();
        for s in &self.segmentations {
            let prefix = if several {
                format!("{}: ", s.segmentation)
            } else {
                String::new()
            };
            lines.extend(
                s.rules
                    .iter()
                    .map(|r| format!("{prefix}{} <- {}", r.segment, r.when)),
            );
            lines.push(format!("{prefix}{} <- (default)", s.default.segment()));
        }
        lines
    }

    async fn run(&self, cx: &StageContext<'_>) -> Result<()> {
        let mut df = self.joined(cx).await?;
        let input = self.inputs.join(" + ");
        let mut predicates: Vec<Vec<Expr>> = Vec::with_capacity(self.segmentations.len());
        for s in &self.segmentations {
            let column = s.column();
            if df.schema().index_of_column_by_name(None, &column).is_some() {
                return Err(Error::BadData {
                    stage: self.id.clone(),
                    message: format!(
                        "input `{input}` already has a column `{column}`; rename the segmentation"
                    ),
                });
            }
            let mut compiled = Vec::with_capacity(s.rules.len());
            for (i, rule) in s.rules.iter().enumerate() {
                let p = df
                    .parse_sql_expr(&rule.when)
                    .map_err(|source| Error::DataFusion {
                        stage: self.id.clone(),
                        context: format!(
                            "segmentation `{}`: rule {} (segment `{}`): `{}` does not compile against `{input}`",
                            s.segmentation,
                            i + 1,
                            rule.segment,
                            rule.when,
                        ),
                        source,
                    })?;
                compiled.push(p);
            }
            predicates.push(compiled);
        }
        let matched = self.rule_matches(cx, &df, &predicates).await?;
        // One projection adds every segment column, and the table is written once.
        for (s, p) in self.segmentations.iter().zip(&predicates) {
            let case = segment_expr(p, &s.rules, s.default.segment())
                .map_err(cx.df_err("building the segment expression"))?;
            df = df
                .with_column(&s.column(), case)
                .map_err(cx.df_err("adding the segment column"))?;
        }
        let info = cx.materialize(&self.output, df).await?;
        if let Some(catalog) = &self.catalog {
            let batch = catalog_batch(&self.catalog_rows())
                .map_err(|e| Error::Internal(format!("building the segment catalog: {e}")))?;
            cx.materialize_batches(catalog, batch.schema(), vec![vec![batch]])
                .await?;
        }

        for (s, matched) in self.segmentations.iter().zip(&matched) {
            let counts = self.sizes(cx, &s.column()).await?;
            // An empty default is fine (the rules cover every row); an empty rule segment is
            // worth a look, with the reason.
            for (i, rule) in s.rules.iter().enumerate() {
                if counts.contains_key(&rule.segment) || info.rows == 0 {
                    continue;
                }
                let why = match matched[i] {
                    0 => format!("its rule {} (`{}`) matches no row", i + 1, rule.when),
                    n => format!(
                        "all {n} rows its rule {} (`{}`) matches are taken by earlier rules",
                        i + 1,
                        rule.when
                    ),
                };
                cx.warn(&format!(
                    "segmentation `{}`: segment `{}` is empty: {why}",
                    s.segmentation, rule.segment
                ));
            }
            cx.metric(
                &format!("{}_segments", s.segmentation),
                serde_json::to_value(&counts).unwrap_or_default(),
            );
        }
        Ok(())
    }
}

impl Rules {
    /// The first input, with each later one's new columns left-joined on the key.
    async fn joined(
        &self,
        cx: &StageContext<'_>,
    ) -> Result<segflow_core::datafusion::dataframe::DataFrame> {
        use segflow_core::datafusion::common::JoinType;
        const JOIN_KEY: &str = "__segflow_rules_key";
        let (first, rest) = self.inputs.split_first().expect("inputs checked at build");
        let mut df = cx.table(first).await?;
        let Some(key) = &self.key else {
            return Ok(df);
        };
        let has_key = |table: &str, df: &segflow_core::datafusion::dataframe::DataFrame| match df
            .schema()
            .index_of_column_by_name(None, key)
        {
            Some(_) => Ok(()),
            None => Err(Error::BadData {
                stage: self.id.clone(),
                message: format!(
                    "input `{table}` has no column `{key}` (the `key` the inputs are joined on)"
                ),
            }),
        };
        has_key(first, &df)?;
        for name in rest {
            let other = cx.table(name).await?;
            has_key(name, &other)?;
            let mut columns = vec![ident(key).alias(JOIN_KEY)];
            columns.extend(
                other
                    .schema()
                    .fields()
                    .iter()
                    .filter(|f| {
                        df.schema()
                            .index_of_column_by_name(None, f.name())
                            .is_none()
                    })
                    .map(|f| ident(f.name())),
            );
            let other = other
                .select(columns)
                .map_err(cx.df_err(format!("the columns of `{name}`")))?;
            df = df
                .join(other, JoinType::Left, &[key.as_str()], &[JOIN_KEY], None)
                .and_then(|df| df.drop_columns(&[JOIN_KEY]))
                .map_err(cx.df_err(format!("joining `{name}` on `{key}`")))?;
        }
        Ok(df)
    }

    /// How many rows each rule matches on its own, first match or not, for every rule of
    /// every segmentation in one aggregate over the input: a rule whose segment ends up empty
    /// either matches nothing or is shadowed by earlier rules.
    async fn rule_matches(
        &self,
        cx: &StageContext<'_>,
        df: &segflow_core::datafusion::dataframe::DataFrame,
        predicates: &[Vec<Expr>],
    ) -> Result<Vec<Vec<i64>>> {
        let mut sums = Vec::new();
        for (j, ps) in predicates.iter().enumerate() {
            for (i, p) in ps.iter().enumerate() {
                let e = when(p.clone(), lit(1i64))
                    .otherwise(lit(0i64))
                    .map_err(cx.df_err("counting rule matches"))?;
                sums.push(sum(e).alias(format!("s{j}_rule_{i}")));
            }
        }
        let batches = df
            .clone()
            .aggregate(vec![], sums)
            .map_err(cx.df_err("counting rule matches"))?
            .collect()
            .await
            .map_err(cx.df_err("counting rule matches"))?;
        let mut at = 0;
        Ok(predicates
            .iter()
            .map(|ps| {
                ps.iter()
                    .map(|_| {
                        let n = batches
                            .first()
                            .and_then(|b| {
                                b.column(at)
                                    .as_any()
                                    .downcast_ref::<Int64Array>()
                                    .filter(|a| a.is_valid(0))
                                    .map(|a| a.value(0))
                            })
                            .unwrap_or(0);
                        at += 1;
                        n
                    })
                    .collect()
            })
            .collect())
    }

    /// Rows per segment of `column` in the output, for the run summary.
    async fn sizes(
        &self,
        cx: &StageContext<'_>,
        column: &str,
    ) -> Result<std::collections::BTreeMap<String, i64>> {
        let sizes = cx
            .table(&self.output)
            .await?
            .aggregate(vec![ident(column)], vec![count(lit(1)).alias("n")])
            .map_err(cx.df_err("counting segments"))?
            .collect()
            .await
            .map_err(cx.df_err("counting segments"))?;
        let mut counts = std::collections::BTreeMap::new();
        for batch in &sizes {
            let n = segflow_core::datafusion::common::cast::as_int64_array(batch.column(1))
                .map_err(cx.df_err("reading segment counts"))?;
            for i in 0..batch.num_rows() {
                let name = array_value_to_string(batch.column(0), i)
                    .map_err(|e| cx.df_err("reading segment counts")(e.into()))?;
                counts.insert(name, n.value(i));
            }
        }
        Ok(counts)
    }
}

/// One row of the segment catalog's definitions.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogRow {
    /// The segmentation.
    pub segmentation: String,
    /// The segment.
    pub segment: String,
    /// The segmentation's place in the stage (1-based), for listing them as written.
    pub segmentation_order: i32,
    /// The place of the segment's first rule (1-based; the default is after the last rule).
    pub rule_order: i32,
    /// The segment's rule as written; several rules giving one segment are joined with `or`;
    /// null for the default alone.
    pub rule: Option<String>,
    /// Whether the segment is the default (rows no rule matches are in it).
    pub is_default: bool,
    /// The first description among its rules.
    pub description: Option<String>,
    /// The first strategy among its rules.
    pub strategy: Option<String>,
}

/// The schema of the catalog output: the columns of [`CatalogRow`].
pub fn catalog_schema() -> segflow_core::datafusion::arrow::datatypes::SchemaRef {
    use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema};
    std::sync::Arc::new(Schema::new(vec![
        Field::new("segmentation", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("segmentation_order", DataType::Int32, false),
        Field::new("rule_order", DataType::Int32, false),
        Field::new("rule", DataType::Utf8, true),
        Field::new("is_default", DataType::Boolean, false),
        Field::new("description", DataType::Utf8, true),
        Field::new("strategy", DataType::Utf8, true),
    ]))
}

impl Rules {
    /// One row per (segmentation, segment), in the order written.
    fn catalog_rows(&self) -> Vec<CatalogRow> {
        let mut rows: Vec<CatalogRow> = Vec::new();
        for (j, s) in self.segmentations.iter().enumerate() {
            let first = rows.len();
            let default = s.default.as_rule();
            let all = s.rules.iter().map(|r| (r, false));
            for (i, (rule, is_default)) in all.chain(std::iter::once((&default, true))).enumerate()
            {
                let text = (!is_default).then(|| rule.when.trim().to_string());
                match rows[first..].iter_mut().find(|r| r.segment == rule.segment) {
                    Some(row) => {
                        row.is_default |= is_default;
                        if let Some(t) = text {
                            row.rule = Some(match row.rule.take() {
                                Some(before) => format!("({before}) or ({t})"),
                                None => t,
                            });
                        }
                        row.description = row.description.take().or(rule.description.clone());
                        row.strategy = row.strategy.take().or(rule.strategy.clone());
                    }
                    None => rows.push(CatalogRow {
                        segmentation: s.segmentation.clone(),
                        segment: rule.segment.clone(),
                        segmentation_order: j as i32 + 1,
                        rule_order: i as i32 + 1,
                        rule: text,
                        is_default,
                        description: rule.description.clone(),
                        strategy: rule.strategy.clone(),
                    }),
                }
            }
        }
        rows
    }
}

/// The catalog rows as one batch of [`catalog_schema`].
fn catalog_batch(
    rows: &[CatalogRow],
) -> std::result::Result<
    segflow_core::datafusion::arrow::array::RecordBatch,
    segflow_core::datafusion::arrow::error::ArrowError,
> {
    use segflow_core::datafusion::arrow::array::{ArrayRef, BooleanArray, Int32Array, StringArray};
    use std::sync::Arc;
    let text = |f: &dyn Fn(&CatalogRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    segflow_core::datafusion::arrow::array::RecordBatch::try_new(
        catalog_schema(),
        vec![
            text(&|r| Some(&r.segmentation)),
            text(&|r| Some(&r.segment)),
            Arc::new(
                rows.iter()
                    .map(|r| r.segmentation_order)
                    .collect::<Int32Array>(),
            ),
            Arc::new(rows.iter().map(|r| r.rule_order).collect::<Int32Array>()),
            text(&|r| r.rule.as_deref()),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.is_default))
                    .collect::<BooleanArray>(),
            ),
            text(&|r| r.description.as_deref()),
            text(&|r| r.strategy.as_deref()),
        ],
    )
}

/// `CASE WHEN p1 THEN s1 ... ELSE default END`.
fn segment_expr(
    predicates: &[Expr],
    rules: &[Rule],
    default: &str,
) -> segflow_core::datafusion::error::Result<Expr> {
    let mut iter = predicates.iter().zip(rules);
    let (p0, r0) = iter.next().expect("at least one rule, checked at build");
    let mut case = when(p0.clone(), lit(r0.segment.as_str()));
    for (p, r) in iter {
        case = case.when(p.clone(), lit(r.segment.as_str()));
    }
    case.otherwise(lit(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_yaml_builds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let stage = segflow_core::stage::check_example(&RulesFactory, &root).unwrap();
        assert_eq!(stage.inputs(), ["customer_rfm"]);
        assert_eq!(stage.describe().last().unwrap(), "low <- (default)");
    }

    fn build(yaml: &str) -> std::result::Result<Box<dyn Stage>, String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        segflow_core::stage::build_yaml(&RulesFactory, &root, yaml).map_err(|e| e.to_string())
    }

    const HEAD: &str = "id: tiers\nkind: segment.rules\ninputs: [t]\noutput: u\n";

    #[test]
    fn several_segmentations_build_as_one_stage() {
        let stage = build(&format!(
            "{HEAD}segmentations:\n  - {{ segmentation: value, rules: [{{ segment: high, when: \"m > 3\" }}], default: low }}\n  - {{ segmentation: age, rules: [{{ segment: young, when: \"age < 30\" }}], default: other }}\n"
        ))
        .unwrap();
        assert_eq!(stage.outputs(), ["u"]);
        assert_eq!(
            stage.describe(),
            [
                "value: high <- m > 3",
                "value: low <- (default)",
                "age: young <- age < 30",
                "age: other <- (default)"
            ]
        );
    }

    #[test]
    fn the_catalog_lists_each_segment_once_with_its_text() {
        let stage = build(&format!(
            "{HEAD}catalog: defs\nsegmentations:\n  - segmentation: value\n    rules:\n      - {{ segment: high, when: \"m > 3\", description: Big spenders, strategy: VIP offers }}\n      - {{ segment: mid, when: \"m > 1\" }}\n      - {{ segment: high, when: \"n > 9\", strategy: ignored }}\n    default: {{ segment: low, description: The rest, strategy: Nurture by email }}\n  - {{ segmentation: age, rules: [{{ segment: old, when: \"age > 60\" }}], default: old }}\n"
        ))
        .unwrap();
        assert_eq!(stage.outputs(), ["u", "defs"]);
        let config: RulesConfig = serde_yaml::from_str(
            "segmentations:\n  - segmentation: value\n    rules:\n      - { segment: high, when: \"m > 3\", description: Big spenders, strategy: VIP offers }\n      - { segment: mid, when: \"m > 1\" }\n      - { segment: high, when: \"n > 9\", strategy: ignored }\n    default: { segment: low, description: The rest, strategy: Nurture by email }\n  - { segmentation: age, rules: [{ segment: old, when: \"age > 60\" }], default: old }\n",
        )
        .unwrap();
        let r = Rules {
            id: "t".into(),
            inputs: vec!["t".into()],
            key: None,
            output: "u".into(),
            catalog: Some("defs".into()),
            segmentations: segmentations_of(config).unwrap(),
        };
        let rows = r.catalog_rows();
        let brief: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.segmentation.as_str(),
                    r.segment.as_str(),
                    r.rule_order,
                    r.rule.as_deref(),
                    r.is_default,
                    r.strategy.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            [
                (
                    "value",
                    "high",
                    1,
                    Some("(m > 3) or (n > 9)"),
                    false,
                    Some("VIP offers")
                ),
                ("value", "mid", 2, Some("m > 1"), false, None),
                ("value", "low", 4, None, true, Some("Nurture by email")),
                ("age", "old", 1, Some("age > 60"), true, None),
            ]
        );
        assert_eq!(catalog_batch(&rows).unwrap().num_rows(), 4);
        // validate's warnings: the segments without a description.
        let warnings = r.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("segmentation `value`: segment `mid` has no description"));
        assert!(warnings[1].contains("segmentation `age`: segment `old`"));
    }

    #[test]
    fn the_two_forms_do_not_mix_and_names_do_not_repeat() {
        let both = build(&format!(
            "{HEAD}segmentation: a\nrules: [{{ segment: x, when: \"true\" }}]\ndefault: y\nsegmentations:\n  - {{ segmentation: b, rules: [{{ segment: x, when: \"true\" }}], default: y }}\n"
        ))
        .unwrap_err();
        assert!(both.contains("use one form"), "{both}");
        let typo = build(&format!(
            "{HEAD}segmentation: a\nrules: [{{ segment: x, when: \"true\" }}]\ndefault: {{ segment: y, descripton: z }}\n"
        ))
        .unwrap_err();
        assert!(
            typo.contains("`default`: unknown field `descripton`, expected one of"),
            "{typo}"
        );
        let none = build(HEAD).unwrap_err();
        assert!(none.contains("has no segmentation"), "{none}");
        let no_default = build(&format!(
            "{HEAD}segmentation: a\nrules: [{{ segment: x, when: \"true\" }}]\n"
        ))
        .unwrap_err();
        assert!(
            no_default.contains("segmentation `a` has no `default`"),
            "{no_default}"
        );
        let twice = build(&format!(
            "{HEAD}segmentations:\n  - {{ segmentation: a, rules: [{{ segment: x, when: \"true\" }}], default: y }}\n  - {{ segmentation: a, rules: [{{ segment: z, when: \"true\" }}], default: y }}\n"
        ))
        .unwrap_err();
        assert!(twice.contains("segmentation `a` appears twice"), "{twice}");
        let bad = build(&format!(
            "{HEAD}segmentations:\n  - {{ segmentation: a, rules: [{{ segment: x, when: \"m >\" }}], default: y }}\n"
        ))
        .unwrap_err();
        assert!(
            bad.contains(
                "segmentation `a`: rule 1 (segment `x`): `when: m >` is not a SQL predicate"
            ),
            "{bad}"
        );
    }
}
