//! `segment.rules`: ordered predicates to a `<segmentation>_segment` column.

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

/// The YAML keys of a `segment.rules` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// The segmentation's name; the stage adds the column `<segmentation>_segment`.
    pub segmentation: String,
    /// Tried in order; the first whose `when` is true gives the row its segment.
    pub rules: Vec<Rule>,
    /// The segment of rows no rule matches.
    pub default: String,
}

/// One rule: `{ segment: champions, when: "r_score = 5 and f_score >= 4" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Segment name given to matching rows.
    pub segment: String,
    /// A SQL predicate over the input table's columns. Null counts as false.
    pub when: String,
}

/// A built rule segmentation.
#[derive(Debug)]
pub struct Rules {
    id: String,
    input: String,
    output: String,
    config: RulesConfig,
}

impl Rules {
    /// The column this segmentation adds.
    pub fn column(&self) -> String {
        format!("{}_segment", self.config.segmentation)
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
        let [input] = spec.inputs.as_slice() else {
            return Err(spec.error(cx.source, "needs exactly one table under `inputs`"));
        };
        let Some(output) = spec.output.clone() else {
            return Err(spec.error(cx.source, "has no `output`; name the table it produces"));
        };
        if !is_name(&config.segmentation) {
            return Err(spec.error(
                cx.source,
                format!(
                    "segmentation `{}` is not a name (lowercase letters, digits, `_`)",
                    config.segmentation
                ),
            ));
        }
        if config.rules.is_empty() {
            return Err(spec.error(
                cx.source,
                "has no `rules`; add at least one `{ segment, when }`",
            ));
        }
        for (i, rule) in config
            .rules
            .iter()
            .chain(std::iter::once(&Rule {
                segment: config.default.clone(),
                when: "true".into(),
            }))
            .enumerate()
        {
            if rule.segment.trim().is_empty() {
                return Err(spec.error(
                    cx.source,
                    format!("rule {} has an empty segment name", i + 1),
                ));
            }
            // A syntax check now; column names are checked when the input's schema is known.
            Parser::new(&GenericDialect {})
                .try_with_sql(&rule.when)
                .and_then(|mut p| p.parse_expr())
                .map_err(|e| {
                    spec.error(
                        cx.source,
                        format!(
                            "rule {} (segment `{}`): `when: {}` is not a SQL predicate: {e}",
                            i + 1,
                            rule.segment,
                            rule.when
                        ),
                    )
                })?;
        }
        Ok(Box::new(Rules {
            id: spec.id.clone(),
            input: input.clone(),
            output,
            config,
        }))
    }
}

pub(crate) fn is_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[async_trait]
impl Stage for Rules {
    fn inputs(&self) -> Vec<String> {
        vec![self.input.clone()]
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .config
            .rules
            .iter()
            .map(|r| format!("{} <- {}", r.segment, r.when))
            .collect();
        lines.push(format!("{} <- (default)", self.config.default));
        lines
    }

    async fn run(&self, cx: &StageContext<'_>) -> Result<()> {
        let df = cx.table(&self.input).await?;
        let column = self.column();
        if df.schema().index_of_column_by_name(None, &column).is_some() {
            return Err(Error::BadData {
                stage: self.id.clone(),
                message: format!(
                    "input `{}` already has a column `{column}`; rename the segmentation",
                    self.input
                ),
            });
        }
        let mut predicates = Vec::with_capacity(self.config.rules.len());
        for (i, rule) in self.config.rules.iter().enumerate() {
            let p = df
                .parse_sql_expr(&rule.when)
                .map_err(|source| Error::DataFusion {
                    stage: self.id.clone(),
                    context: format!(
                        "rule {} (segment `{}`): `{}` does not compile against `{}`",
                        i + 1,
                        rule.segment,
                        rule.when,
                        self.input
                    ),
                    source,
                })?;
            predicates.push(p);
        }
        let case = segment_expr(&predicates, &self.config.rules, &self.config.default)
            .map_err(cx.df_err("building the segment expression"))?;
        // How many rows each rule matches on its own, first match or not: a rule whose
        // segment ends up empty either matches nothing or is shadowed by earlier rules.
        let matched = df
            .clone()
            .aggregate(
                vec![],
                predicates
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        when(p.clone(), lit(1i64))
                            .otherwise(lit(0i64))
                            .map(|e| sum(e).alias(format!("rule_{i}")))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(cx.df_err("counting rule matches"))?,
            )
            .map_err(cx.df_err("counting rule matches"))?
            .collect()
            .await
            .map_err(cx.df_err("counting rule matches"))?;
        let matched: Vec<i64> = (0..predicates.len())
            .map(|i| {
                matched
                    .first()
                    .and_then(|b| {
                        b.column(i)
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .filter(|a| a.is_valid(0))
                            .map(|a| a.value(0))
                    })
                    .unwrap_or(0)
            })
            .collect();
        let df = df
            .with_column(&column, case)
            .map_err(cx.df_err("adding the segment column"))?;
        let info = cx.materialize(&self.output, df).await?;

        // Segment sizes for the run summary; segments no row reached are worth a warning.
        let sizes = cx
            .table(&self.output)
            .await?
            .aggregate(vec![ident(&column)], vec![count(lit(1)).alias("n")])
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
        // An empty default is fine (the rules cover every row); an empty rule segment is
        // worth a look, with the reason.
        for (i, rule) in self.config.rules.iter().enumerate() {
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
                self.config.segmentation, rule.segment
            ));
        }
        cx.metric(
            &format!("{}_segments", self.config.segmentation),
            serde_json::to_value(&counts).unwrap_or_default(),
        );
        Ok(())
    }
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
}
