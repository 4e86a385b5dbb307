//! SQL files: loading, static checks, and binding named parameters.
//!
//! A SQL file holds one query. Values come in as `$name` placeholders that DataFusion binds
//! through its named [`ParamValues`]; nothing is spliced into the text. Tables are the logical
//! names the runner registers for the run. Both the placeholders and the tables a query reads are
//! found with DataFusion's own SQL parser, so `segflow validate` needs no data.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use datafusion::common::ParamValues;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Query, Statement, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Error, Location, Result};
use crate::yaml::Value;

/// A parsed, checked SQL file.
#[derive(Debug, Clone)]
pub struct SqlFile {
    /// The path as the user wrote it, relative to the SQL directory (`features/rfm.sql`).
    pub name: String,
    /// The path on disk.
    pub path: PathBuf,
    pub text: String,
    /// Placeholder names without the `$`.
    pub placeholders: BTreeSet<String>,
    /// Tables the query reads, excluding its own CTEs.
    pub tables: BTreeSet<String>,
}

impl SqlFile {
    pub fn load(sql_dir: &Path, name: &str) -> Result<SqlFile> {
        let path = sql_dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadFile {
            path: path.clone(),
            source,
        })?;
        Self::parse(name, path, text)
    }

    pub fn parse(name: &str, path: PathBuf, text: String) -> Result<SqlFile> {
        let syntax = |message: String| {
            let location = sqlparser_location(&message);
            Error::Spec {
                file: path.clone(),
                location,
                message: format!("SQL syntax: {message}"),
            }
        };
        let statements = DFParser::parse_sql(&text).map_err(|e| syntax(e.to_string()))?;
        if statements.len() != 1 {
            return Err(Error::Invalid {
                file: path.clone(),
                message: format!(
                    "holds {} statements; a SQL file holds exactly one query",
                    statements.len()
                ),
            });
        }
        let query = match &statements[0] {
            DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => s,
            _ => {
                return Err(Error::Invalid {
                    file: path.clone(),
                    message: "is not a query; a SQL file holds one SELECT (WITH ... SELECT ...)"
                        .into(),
                });
            }
        };
        let mut tables = TableCollector::default();
        let _ = query.visit(&mut tables);
        let tables = tables
            .relations
            .into_iter()
            .filter(|t| !tables.ctes.contains(t))
            .collect();
        let placeholders = placeholders(&text).map_err(syntax)?;
        Ok(SqlFile {
            name: name.to_string(),
            path,
            text,
            placeholders,
            tables,
        })
    }
}

/// The `$name` placeholders of a SQL text (`$1`-style positional ones are rejected elsewhere).
fn placeholders(text: &str) -> std::result::Result<BTreeSet<String>, String> {
    let tokens = Tokenizer::new(&GenericDialect {}, text)
        .tokenize()
        .map_err(|e| e.to_string())?;
    Ok(tokens
        .into_iter()
        .filter_map(|t| match t {
            Token::Placeholder(p) => p.strip_prefix('$').map(str::to_string),
            _ => None,
        })
        .collect())
}

#[derive(Default)]
struct TableCollector {
    relations: BTreeSet<String>,
    ctes: BTreeSet<String>,
}

impl Visitor for TableCollector {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(
        &mut self,
        relation: &datafusion::sql::sqlparser::ast::ObjectName,
    ) -> ControlFlow<()> {
        self.relations.insert(relation.to_string().to_lowercase());
        ControlFlow::Continue(())
    }
}

/// sqlparser ends its messages with "at Line: L, Column: C".
fn sqlparser_location(message: &str) -> Option<Location> {
    let i = message.rfind("Line: ")?;
    let rest = &message[i + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(Location {
        line: line.trim().parse().ok()?,
        column: column.parse().ok()?,
    })
}

/// Stage params, checked against a SQL file's placeholders.
#[derive(Debug, Clone, Default)]
pub struct Params(BTreeMap<String, Param>);

/// One param's value: written in the YAML, or read when the stage runs from the one row of a
/// table of the run (`as_of: { table: run_as_of }`). The second is how a value the run computes,
/// such as the as_of day, reaches a query as a literal: the optimizer folds it into filters and
/// pushes them into scans. Read from the table in SQL instead, it is a join with a one-row
/// table, which DataFusion runs as a nested-loop join that copies every row it lets through
/// (at 1M customers, 4 of customer_features' 21 s and 4 of customer_rfm's 6).
#[derive(Debug, Clone)]
enum Param {
    Value(ScalarValue),
    Column { table: String, column: String },
}

impl Params {
    /// Types YAML values: strings stay text (cast in SQL where a date is meant: the SQL says
    /// what it expects), integers are BIGINT, other numbers DOUBLE, booleans BOOLEAN. A mapping
    /// `{ table: T, column: C }` (`column` defaults to the param's name) is a column of a
    /// one-row table, with that column's type.
    pub fn from_yaml(values: &BTreeMap<String, Value>) -> std::result::Result<Params, String> {
        let mut out = BTreeMap::new();
        for (k, v) in values {
            let param = match v {
                Value::String(s) => Param::Value(ScalarValue::Utf8(Some(s.clone()))),
                Value::Bool(b) => Param::Value(ScalarValue::Boolean(Some(*b))),
                Value::Number(n) if n.is_i64() => Param::Value(ScalarValue::Int64(n.as_i64())),
                Value::Number(n) => Param::Value(ScalarValue::Float64(n.as_f64())),
                Value::Null => Param::Value(ScalarValue::Utf8(None)),
                Value::Mapping(m) => column_param(k, m)?,
                other => {
                    return Err(format!(
                        "param `{k}` is {other:?}; a param is a single text, number or boolean, \
                         or `{{ table: T, column: C }}` for a column of a one-row table"
                    ));
                }
            };
            out.insert(k.clone(), param);
        }
        Ok(Params(out))
    }

    /// The tables that params are read from: inputs of the stage, besides those its SQL reads.
    pub fn tables(&self) -> BTreeSet<String> {
        self.0
            .values()
            .filter_map(|p| match p {
                Param::Column { table, .. } => Some(table.clone()),
                Param::Value(_) => None,
            })
            .collect()
    }

    /// Every placeholder has a param and every param a placeholder.
    pub fn check(&self, pipeline: &Path, stage: &str, sql: &SqlFile) -> Result<()> {
        for name in &sql.placeholders {
            if name.chars().all(|c| c.is_ascii_digit()) {
                return Err(Error::Invalid {
                    file: sql.path.clone(),
                    message: format!(
                        "uses positional `${name}`; name the value instead (`$as_of`) and set it under the stage's `params`"
                    ),
                });
            }
            if !self.0.contains_key(name) {
                return Err(Error::MissingParam {
                    pipeline: pipeline.to_path_buf(),
                    stage: stage.to_string(),
                    sql: sql.path.clone(),
                    name: name.clone(),
                });
            }
        }
        if let Some(extra) = self.0.keys().find(|k| !sql.placeholders.contains(*k)) {
            return Err(Error::UnusedParam {
                pipeline: pipeline.to_path_buf(),
                stage: stage.to_string(),
                sql: sql.path.clone(),
                name: extra.clone(),
            });
        }
        Ok(())
    }

    /// The values to bind, reading table params from `ctx`'s tables now. A table param's
    /// table must hold exactly one row.
    pub async fn values(&self, stage: &str, ctx: &SessionContext) -> Result<ParamValues> {
        let mut values = std::collections::HashMap::new();
        for (name, param) in &self.0 {
            let value = match param {
                Param::Value(v) => v.clone(),
                Param::Column { table, column } => {
                    read_one(ctx, table, column)
                        .await
                        .map_err(|e| match e {
                            OneRow::DataFusion(source) => Error::DataFusion {
                                stage: stage.to_string(),
                                context: format!("reading param `{name}` from `{table}.{column}`"),
                                source,
                            },
                            OneRow::Rows(rows) => Error::BadData {
                                stage: stage.to_string(),
                                message: format!(
                                    "param `{name}` is read from `{table}.{column}`, but `{table}` has {rows} rows; \
                                     a param table needs exactly one"
                                ),
                            },
                        })?
                }
            };
            values.insert(name.clone(), value);
        }
        Ok(ParamValues::from(values))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn column_param(name: &str, m: &crate::yaml::Mapping) -> std::result::Result<Param, String> {
    let text = |key: &str| match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "param `{name}`: `{key}` is {other:?}; give a table or column name"
        )),
    };
    if let Some(k) = m
        .keys()
        .find(|k| !matches!(k.as_str(), Some("table" | "column")))
    {
        return Err(format!(
            "param `{name}`: unknown key {k:?}; a table param is `{{ table: T, column: C }}`"
        ));
    }
    let Some(table) = text("table")? else {
        return Err(format!(
            "param `{name}` is a mapping without `table`; a table param is `{{ table: T, column: C }}`"
        ));
    };
    let column = text("column")?.unwrap_or_else(|| name.to_string());
    Ok(Param::Column { table, column })
}

enum OneRow {
    DataFusion(datafusion::error::DataFusionError),
    Rows(usize),
}

async fn read_one(
    ctx: &SessionContext,
    table: &str,
    column: &str,
) -> std::result::Result<ScalarValue, OneRow> {
    let batches = ctx
        .table(table)
        .await
        .and_then(|df| df.select_columns(&[column]))
        .map_err(OneRow::DataFusion)?
        .collect()
        .await
        .map_err(OneRow::DataFusion)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    match batches.iter().find(|b| b.num_rows() > 0) {
        Some(batch) if rows == 1 => {
            ScalarValue::try_from_array(batch.column(0), 0).map_err(OneRow::DataFusion)
        }
        _ => Err(OneRow::Rows(rows)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SqlFile> {
        SqlFile::parse("t.sql", PathBuf::from("sql/t.sql"), text.to_string())
    }

    #[test]
    fn finds_tables_but_not_ctes_and_placeholders_but_not_strings() {
        let f = parse(
            "-- $not_a_param in a comment\nwith x as (select * from orders where ts < cast($as_of as date))\n\
             select x.*, '$nope' from x join Customers c using (customer_id) where n > $min_orders",
        )
        .unwrap();
        assert_eq!(f.tables, ["customers", "orders"].map(String::from).into());
        assert_eq!(
            f.placeholders,
            ["as_of", "min_orders"].map(String::from).into()
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = parse("select 1\nfrom t\nwhere )\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("sql/t.sql:3:"), "{err}");
    }

    #[test]
    fn rejects_statements_that_are_not_queries() {
        assert!(parse("create table t as select 1").is_err());
        assert!(parse("select 1; select 2").is_err());
    }

    #[test]
    fn params_must_match_placeholders() {
        let f = parse("select $a").unwrap();
        let p = |kv: &[(&str, Value)]| {
            Params::from_yaml(&kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
                .unwrap()
        };
        let pipeline = Path::new("p.yaml");
        let missing = p(&[]).check(pipeline, "s", &f).unwrap_err().to_string();
        assert!(
            missing.contains(
                "uses `$a` but p.yaml does not set it; add it under the stage's `params`"
            ),
            "{missing}"
        );
        let extra = p(&[("a", Value::from(1)), ("b", Value::from("x"))])
            .check(pipeline, "s", &f)
            .unwrap_err()
            .to_string();
        assert!(extra.contains("param `b` is set"), "{extra}");
        p(&[("a", Value::from(1))])
            .check(pipeline, "s", &f)
            .unwrap();
    }

    fn yaml_params(text: &str) -> std::result::Result<Params, String> {
        Params::from_yaml(&serde_yaml::from_str(text).unwrap())
    }

    #[tokio::test]
    async fn table_params_read_the_one_row_of_their_table() {
        let ctx = SessionContext::new();
        ctx.sql("create table run_as_of as select date '2026-03-01' as as_of, 7 as n")
            .await
            .unwrap();
        ctx.sql("create table two as select 1 as n union all select 2")
            .await
            .unwrap();
        let p = yaml_params(
            "{ as_of: { table: run_as_of }, m: { table: run_as_of, column: n }, k: 3 }",
        )
        .unwrap();
        assert_eq!(p.tables(), ["run_as_of".to_string()].into());
        let values = p.values("s", &ctx).await.unwrap();
        let get = |name: &str| {
            values
                .get_placeholders_with_values(&format!("${name}"))
                .unwrap()
                .value()
                .clone()
        };
        assert_eq!(get("as_of"), ScalarValue::Date32(Some(20513)));
        assert_eq!(get("m"), ScalarValue::Int64(Some(7)));
        assert_eq!(get("k"), ScalarValue::Int64(Some(3)));

        for (yaml, says) in [
            (
                "{ n: { table: two } }",
                "param `n` is read from `two.n`, but `two` has 2 rows",
            ),
            (
                "{ n: { table: run_as_of, column: missing } }",
                "reading param `n` from `run_as_of.missing`",
            ),
        ] {
            let err = yaml_params(yaml)
                .unwrap()
                .values("s", &ctx)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
        let err = yaml_params("{ n: { tabel: run_as_of } }").unwrap_err();
        assert!(err.contains("unknown key"), "{err}");
        let err = yaml_params("{ n: { column: x } }").unwrap_err();
        assert!(err.contains("without `table`"), "{err}");
    }

    proptest::proptest! {
        /// A param's text, whatever it holds (quotes, `--`, `;`, `$other`), comes back as
        /// the value it is: params are bound by DataFusion, never spliced into the SQL.
        #[test]
        fn prop_params_are_bound_as_values(value in "\\PC{0,24}") {
            let sql = SqlFile::parse("t.sql", PathBuf::from("t.sql"), "select $p as v".into())
                .unwrap();
            let params = Params::from_yaml(&BTreeMap::from([(
                "p".to_string(),
                Value::String(value.clone()),
            )]))
            .unwrap();
            params.check(Path::new("p.yaml"), "s", &sql).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(async {
                let ctx = SessionContext::new();
                let values = params.values("s", &ctx).await.unwrap();
                let df = ctx.sql(&sql.text).await.unwrap().with_param_values(values).unwrap();
                df.collect().await.unwrap()
            });
            use datafusion::arrow::array::AsArray;
            let col = got[0].column(0);
            let text = match col.data_type() {
                datafusion::arrow::datatypes::DataType::Utf8View => col.as_string_view().value(0).to_string(),
                _ => col.as_string::<i32>().value(0).to_string(),
            };
            proptest::prop_assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
            proptest::prop_assert_eq!(text, value);
        }
    }
}
