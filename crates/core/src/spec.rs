//! `PipelineSpec`: the pipeline YAML exactly as written, before anything is resolved.
//!
//! A stage has a few keys every kind shares (`id`, `kind`, `description`, `inputs`, `output`,
//! `checks`); every other key belongs to the kind and is parsed by the kind's own config type
//! with unknown keys rejected (see [`StageSpec::config`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::yaml::{self, Mapping, Value};

/// The top level of a pipeline file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Pipeline name, recorded in run manifests and Delta commit info.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Named values that `${name}` in any string of the file expands to. Each can be
    /// overridden on the command line with `--var name=value`.
    #[serde(default)]
    pub vars: BTreeMap<String, VarSpec>,
    /// Where run manifests (`<run_id>.json`) and each run's scratch tables
    /// (`<run_id>/work/`) go: a local path or an object store URL.
    pub runs: String,
    /// Directory of the SQL files that stages name, relative to the pipeline file. By default
    /// the nearest `sql/` directory at or above the pipeline file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_dir: Option<String>,
    /// Object store options per bucket, over the standard environment variables:
    /// `s3://bucket: {endpoint: "${env:S3_ENDPOINT}", region: eu-west-1}`. Values may read
    /// the environment with `${env:NAME}`; they are never written to logs or manifests.
    #[serde(default, skip_serializing)]
    pub storage: BTreeMap<String, BTreeMap<String, String>>,
    /// Where the stages' plans run: `local` (the default, this process) or a Ballista
    /// cluster, `ballista://HOST:PORT`. `--engine` and `SEGFLOW_ENGINE` override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    pub stages: Vec<StageSpec>,
}

/// A pipeline var: `name: default` or `name: {default, type, description}`.
#[derive(Debug, Clone, Serialize)]
pub struct VarSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(rename = "type")]
    pub var_type: VarType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    /// Any text.
    #[default]
    String,
    /// `YYYY-MM-DD`, or empty for "not set".
    Date,
    /// An integer.
    Int,
}

impl<'de> Deserialize<'de> for VarSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            #[serde(default)]
            default: Option<Scalar>,
            #[serde(default, rename = "type")]
            var_type: VarType,
            #[serde(default)]
            description: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        impl Scalar {
            fn text(self) -> String {
                match self {
                    Scalar::S(s) => s,
                    Scalar::I(i) => i.to_string(),
                    Scalar::F(f) => f.to_string(),
                    Scalar::B(b) => b.to_string(),
                }
            }
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Short(Scalar),
            Long(Long),
            Null(()),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a var is `name: value` or `name: {default: value, type: string|date|int, description: text}`",
            )
        })?;
        Ok(match raw {
            Raw::Short(s) => VarSpec {
                default: Some(s.text()),
                var_type: VarType::String,
                description: None,
            },
            Raw::Long(l) => VarSpec {
                default: l.default.map(Scalar::text),
                var_type: l.var_type,
                description: l.description,
            },
            Raw::Null(()) => VarSpec {
                default: None,
                var_type: VarType::String,
                description: None,
            },
        })
    }
}

/// One data test run on a stage's output as soon as the stage finishes (as dbt's tests).
/// Written as a one-key mapping: `{ unique: [customer_id] }`.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckSpec {
    /// No two rows share these columns' values.
    Unique(Vec<String>),
    /// None of these columns is null.
    NotNull(Vec<String>),
    /// Every non-null value of `column` is one of `values`.
    AcceptedValues { column: String, values: Vec<String> },
    /// The output has as many rows as this other table of the run.
    RowCountEquals(String),
    /// This SQL predicate holds for every row.
    ExpressionIsTrue(String),
}

impl CheckSpec {
    /// The check with `f` applied to each of its texts (column names, values, the table, the
    /// predicate): how `${var}`s in checks are expanded.
    pub fn map_texts<E>(
        &self,
        f: impl Fn(&str) -> std::result::Result<String, E>,
    ) -> std::result::Result<CheckSpec, E> {
        let all = |v: &[String]| {
            v.iter()
                .map(|s| f(s))
                .collect::<std::result::Result<Vec<_>, E>>()
        };
        Ok(match self {
            CheckSpec::Unique(c) => CheckSpec::Unique(all(c)?),
            CheckSpec::NotNull(c) => CheckSpec::NotNull(all(c)?),
            CheckSpec::AcceptedValues { column, values } => CheckSpec::AcceptedValues {
                column: f(column)?,
                values: all(values)?,
            },
            CheckSpec::RowCountEquals(t) => CheckSpec::RowCountEquals(f(t)?),
            CheckSpec::ExpressionIsTrue(e) => CheckSpec::ExpressionIsTrue(f(e)?),
        })
    }
}

impl Serialize for CheckSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self {
            CheckSpec::Unique(c) => m.serialize_entry("unique", c)?,
            CheckSpec::NotNull(c) => m.serialize_entry("not_null", c)?,
            CheckSpec::AcceptedValues { column, values } => {
                let mut inner = BTreeMap::new();
                inner.insert("column", Value::from(column.as_str()));
                inner.insert(
                    "values",
                    Value::Sequence(values.iter().map(|v| Value::from(v.as_str())).collect()),
                );
                m.serialize_entry("accepted_values", &inner)?
            }
            CheckSpec::RowCountEquals(t) => m.serialize_entry("row_count_equals", t)?,
            CheckSpec::ExpressionIsTrue(e) => m.serialize_entry("expression_is_true", e)?,
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for CheckSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // A struct of options rather than an externally tagged enum: serde_yaml reads those
        // only from text, and stage keys arrive as already parsed values.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct AcceptedValues {
            column: String,
            values: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            unique: Option<Vec<String>>,
            not_null: Option<Vec<String>>,
            accepted_values: Option<AcceptedValues>,
            row_count_equals: Option<String>,
            expression_is_true: Option<String>,
        }
        let r = Raw::deserialize(d)?;
        let mut found = Vec::new();
        if let Some(c) = r.unique {
            found.push(CheckSpec::Unique(c));
        }
        if let Some(c) = r.not_null {
            found.push(CheckSpec::NotNull(c));
        }
        if let Some(a) = r.accepted_values {
            found.push(CheckSpec::AcceptedValues {
                column: a.column,
                values: a.values,
            });
        }
        if let Some(t) = r.row_count_equals {
            found.push(CheckSpec::RowCountEquals(t));
        }
        if let Some(e) = r.expression_is_true {
            found.push(CheckSpec::ExpressionIsTrue(e));
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(serde::de::Error::custom("empty check")),
            _ => Err(serde::de::Error::custom("one check per list item")),
        }
    }
}

impl CheckSpec {
    /// Short name used in logs and errors.
    pub fn name(&self) -> String {
        match self {
            CheckSpec::Unique(c) => format!("unique({})", c.join(", ")),
            CheckSpec::NotNull(c) => format!("not_null({})", c.join(", ")),
            CheckSpec::AcceptedValues { column, .. } => format!("accepted_values({column})"),
            CheckSpec::RowCountEquals(t) => format!("row_count_equals({t})"),
            CheckSpec::ExpressionIsTrue(e) => format!("expression_is_true({e})"),
        }
    }
}

/// The keys every stage has, whatever its kind.
pub const COMMON_STAGE_KEYS: &[&str] = &["id", "kind", "description", "inputs", "output", "checks"];

/// One entry of `stages:`.
#[derive(Debug, Clone, Serialize)]
pub struct StageSpec {
    /// Unique in the pipeline; appears in logs, errors and the run manifest.
    pub id: String,
    /// `<area>.<name>`: which registered stage type runs this entry.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Logical table names this stage reads (some kinds derive them, e.g. from their SQL).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// The logical table this stage produces, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
    /// Every other key: the kind's own settings.
    #[serde(flatten)]
    pub config: Mapping,
}

impl<'de> Deserialize<'de> for StageSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut map = Mapping::deserialize(d)?;
        let mut take = |key: &str| map.remove(key);
        let id: String = match take("id") {
            Some(v) => yaml::from_value(v).map_err(D::Error::custom)?,
            None => return Err(D::Error::missing_field("id")),
        };
        let field = |key: &str, v: Value| -> std::result::Result<Value, D::Error> {
            if v.is_null() {
                Err(D::Error::custom(format!("stage `{id}`: `{key}` is empty")))
            } else {
                Ok(v)
            }
        };
        let kind: String = match take("kind") {
            Some(v) => yaml::from_value(field("kind", v)?)
                .map_err(|e| D::Error::custom(format!("stage `{id}`: kind: {e}")))?,
            None => {
                return Err(D::Error::custom(format!(
                    "stage `{id}` has no `kind`; add one (`segflow stages` lists them)"
                )));
            }
        };
        let parse = |key: &str, v: Option<Value>| -> std::result::Result<Option<Value>, D::Error> {
            v.map(|v| field(key, v)).transpose()
        };
        let description = parse("description", take("description"))?
            .map(yaml::from_value)
            .transpose()
            .map_err(|e| D::Error::custom(format!("stage `{id}`: description: {e}")))?;
        let inputs = parse("inputs", take("inputs"))?
            .map(yaml::from_value)
            .transpose()
            .map_err(|e| {
                D::Error::custom(format!("stage `{id}`: inputs: {e} (a list of table names)"))
            })?
            .unwrap_or_default();
        let output = parse("output", take("output"))?
            .map(yaml::from_value)
            .transpose()
            .map_err(|e| D::Error::custom(format!("stage `{id}`: output: {e} (a table name)")))?;
        let checks = parse("checks", take("checks"))?
            .map(yaml::from_value)
            .transpose()
            .map_err(|e| {
                D::Error::custom(format!(
                    "stage `{id}`: checks: {e}; a check is one of `unique: [cols]`, `not_null: [cols]`, \
                     `accepted_values: {{column, values}}`, `row_count_equals: table`, `expression_is_true: sql`"
                ))
            })?
            .unwrap_or_default();
        Ok(StageSpec {
            id,
            kind,
            description,
            inputs,
            output,
            checks,
            config: map,
        })
    }
}

/// Where a stage's kind-specific keys are parsed: what errors need to point at the right line.
#[derive(Debug, Clone)]
pub struct SpecSource {
    pub file: PathBuf,
    pub text: String,
}

impl StageSpec {
    /// Parses the kind-specific keys into the kind's config type. The config type should use
    /// `#[serde(deny_unknown_fields)]`: an unknown key is then reported with its line and column
    /// and the list of valid keys.
    pub fn config<C: serde::de::DeserializeOwned>(&self, src: &SpecSource) -> Result<C> {
        yaml::from_value(Value::Mapping(self.config.clone())).map_err(|message| {
            let key = message.split('`').nth(1).filter(|_| {
                message.starts_with("unknown field") || message.starts_with("missing field")
            });
            let location = match key {
                Some(k) if message.starts_with("unknown field") => {
                    yaml::locate_key(&src.text, Some(("id", &self.id)), k)
                }
                _ => yaml::locate_key(&src.text, Some(("id", &self.id)), "id"),
            };
            let hint = if message.starts_with("unknown field") {
                format!(
                    "; every stage also takes {}",
                    COMMON_STAGE_KEYS
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            };
            Error::Spec {
                file: src.file.clone(),
                location,
                message: format!("stage `{}` ({}): {message}{hint}", self.id, self.kind),
            }
        })
    }

    /// An error about this stage that points at its `id:` line.
    pub fn error(&self, src: &SpecSource, message: impl std::fmt::Display) -> Error {
        Error::Spec {
            file: src.file.clone(),
            location: yaml::locate_key(&src.text, Some(("id", &self.id)), "id"),
            message: format!("stage `{}`: {message}", self.id),
        }
    }
}

impl PipelineSpec {
    /// Reads and parses a pipeline file.
    pub fn load(path: &Path) -> Result<(PipelineSpec, SpecSource)> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        let spec = Self::parse(path, &text)?;
        Ok((
            spec,
            SpecSource {
                file: path.to_path_buf(),
                text,
            },
        ))
    }

    pub fn parse(path: &Path, text: &str) -> Result<PipelineSpec> {
        yaml::from_str(path, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PipelineSpec> {
        PipelineSpec::parse(Path::new("p.yaml"), text)
    }

    #[test]
    fn stage_keeps_kind_specific_keys_apart() {
        let p = parse(
            "name: p\nruns: /tmp/r\nstages:\n  - id: a\n    kind: features.sql\n    sql: x.sql\n    \
             checks: [{unique: [customer_id]}, {accepted_values: {column: g, values: [F, M]}}]\n",
        )
        .unwrap();
        let s = &p.stages[0];
        assert_eq!(s.kind, "features.sql");
        assert_eq!(s.config.get("sql").and_then(Value::as_str), Some("x.sql"));
        assert_eq!(s.checks[0], CheckSpec::Unique(vec!["customer_id".into()]));
        assert!(s.config.get("checks").is_none());
    }

    #[test]
    fn unknown_top_level_key_lists_valid_keys_with_position() {
        let err = parse("name: p\nruns: r\nstagez: []\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("p.yaml:3:1: unknown field `stagez`, expected one of"),
            "{err}"
        );
        assert!(err.contains("`stages`"), "{err}");
    }

    #[test]
    fn var_forms() {
        let p = parse(
            "name: p\nruns: r\nvars:\n  a: x\n  b: {default: '', type: date, description: d}\n  c: 3\nstages: []\n",
        )
        .unwrap();
        assert_eq!(p.vars["a"].default.as_deref(), Some("x"));
        assert_eq!(p.vars["b"].var_type, VarType::Date);
        assert_eq!(p.vars["c"].default.as_deref(), Some("3"));
    }

    #[test]
    fn stage_without_kind_is_an_error_with_position() {
        let err = parse("name: p\nruns: r\nstages:\n  - id: a\n    sql: x\n").unwrap_err();
        assert!(err.to_string().contains("stage `a` has no `kind`"), "{err}");
    }

    #[test]
    fn spec_round_trips_through_yaml() {
        let text = "name: p\nruns: r\nvars:\n  a: x\nstages:\n  - id: a\n    kind: k\n    inputs: [t]\n    output: o\n    sql: s.sql\n    checks:\n    - not_null: [c]\n";
        let p = parse(text).unwrap();
        let again = parse(&yaml::to_string(&p).unwrap()).unwrap();
        assert_eq!(again.stages[0].config, p.stages[0].config);
        assert_eq!(again.stages[0].checks, p.stages[0].checks);
        assert_eq!(again.vars["a"].default, p.vars["a"].default);
    }

    proptest::proptest! {
        /// Arbitrary text, and the shipped pipeline with bytes changed, load or fail with a
        /// typed error: never a panic.
        #[test]
        fn prop_yaml_loader_never_panics(
            text in "\\PC{0,200}",
            at in 0usize..4000,
            with in "[ :\\-\\[\\]{}\"'#&*!|>%@`,\\n\\t]{1,3}",
        ) {
            let file = std::path::Path::new("p.yaml");
            let _ = crate::yaml::from_str::<PipelineSpec>(file, &text);
            let shipped = include_str!("../../../pipelines/customer_segmentation.yaml");
            let at = shipped.char_indices().map(|(i, _)| i).find(|i| *i >= at % shipped.len()).unwrap_or(0);
            let mut changed = shipped.to_string();
            changed.insert_str(at, &with);
            let _ = crate::yaml::from_str::<PipelineSpec>(file, &changed);
        }
    }
}
