//! `Plan`: a pipeline resolved and checked, ready to run.
//!
//! Loading has two steps, as ripgrep does with its flags: [`PipelineSpec`] mirrors the YAML,
//! and [`Plan::load`] resolves it: vars expanded, every stage built by its kind's factory (which
//! reads and checks its SQL file, rules or contract), and the stage graph checked for duplicate
//! outputs, dangling inputs and cycles. Only a `Plan` ever runs, so everything that can be
//! checked without data is checked before any data is read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use url::Url;

use crate::error::{Error, Result};
use crate::spec::{PipelineSpec, SpecSource, StageSpec};
use crate::stage::{BuildContext, Registry, Stage};
use crate::storage;
use crate::vars::Vars;
use crate::yaml::Value;

#[derive(Debug)]
pub struct PlannedStage {
    pub spec: StageSpec,
    pub stage: Box<dyn Stage>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub file: PathBuf,
    pub vars: Vars,
    /// Where manifests and run work tables go.
    pub runs: Url,
    /// Object store options from the `storage:` block, secrets included.
    pub storage: Vec<storage::StoreConfig>,
    /// The pipeline's `engine:`, vars expanded; `None`: not set.
    pub engine: Option<String>,
    /// Stages in an order where every stage comes after the stages it reads from.
    pub stages: Vec<PlannedStage>,
}

impl Plan {
    pub fn load(file: &Path, overrides: &[(String, String)], registry: &Registry) -> Result<Plan> {
        let (spec, source) = PipelineSpec::load(file)?;
        Self::from_spec(spec, source, overrides, registry)
    }

    pub fn from_spec(
        spec: PipelineSpec,
        source: SpecSource,
        overrides: &[(String, String)],
        registry: &Registry,
    ) -> Result<Plan> {
        let file = source.file.clone();
        let vars = Vars::resolve(&file, &spec.vars, overrides)?;
        let pipeline_dir = std::path::absolute(&file)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let sql_dir = match &spec.sql_dir {
            Some(d) => pipeline_dir.join(vars.expand(&file, d)?),
            None => find_sql_dir(&pipeline_dir).ok_or_else(|| Error::Invalid {
                file: file.clone(),
                message: format!(
                    "no `sql/` directory at or above {}; create one or set `sql_dir:`",
                    pipeline_dir.display()
                ),
            })?,
        };
        let runs = storage::parse_location(&vars.expand(&file, &spec.runs)?)?;
        let engine = spec
            .engine
            .as_deref()
            .map(|e| vars.expand(&file, e))
            .transpose()?;
        let mut stores = Vec::with_capacity(spec.storage.len());
        for (prefix, options) in &spec.storage {
            let prefix = storage::parse_location(&vars.expand(&file, prefix)?)?;
            let options = options
                .iter()
                .map(|(k, v)| Ok((k.clone(), vars.expand_with_env(&file, v)?)))
                .collect::<Result<Vec<_>>>()?;
            stores.push(storage::StoreConfig { prefix, options });
        }

        let mut stages = Vec::with_capacity(spec.stages.len());
        let mut ids = BTreeSet::new();
        for stage_spec in spec.stages {
            if !ids.insert(stage_spec.id.clone()) {
                return Err(stage_spec.error(
                    &source,
                    "this id is used by another stage too; ids must be unique",
                ));
            }
            if !is_identifier(&stage_spec.id) {
                return Err(stage_spec.error(
                    &source,
                    "an id is lowercase letters, digits and `_`, starting with a letter",
                ));
            }
            let mut stage_spec = stage_spec;
            let mut config = Value::Mapping(std::mem::take(&mut stage_spec.config));
            vars.expand_value(&file, &mut config)?;
            let Value::Mapping(config) = config else {
                return Err(Error::Internal(
                    "stage config stopped being a mapping".into(),
                ));
            };
            stage_spec.config = config;
            // `${name}` reaches the checks too, as everywhere else in the file.
            stage_spec.checks = stage_spec
                .checks
                .iter()
                .map(|c| c.map_texts(|t| vars.expand(&file, t)))
                .collect::<Result<_>>()?;
            let factory = registry
                .get(&stage_spec.kind)
                .ok_or_else(|| Error::UnknownKind {
                    file: file.clone(),
                    location: crate::yaml::locate_key(
                        &source.text,
                        Some(("id", &stage_spec.id)),
                        "kind",
                    ),
                    stage: stage_spec.id.clone(),
                    kind: stage_spec.kind.clone(),
                    known: registry.kinds(),
                })?;
            let stage = factory.build(
                &stage_spec,
                &BuildContext {
                    source: &source,
                    pipeline_dir: &pipeline_dir,
                    sql_dir: &sql_dir,
                    vars: &vars,
                },
            )?;
            let inputs = stage.inputs();
            let outputs = stage.outputs();
            for t in inputs.iter().chain(&outputs) {
                if !is_identifier(t) {
                    return Err(stage_spec.error(
                        &source,
                        format!("`{t}` is not a table name; use lowercase letters, digits and `_`"),
                    ));
                }
            }
            stages.push(PlannedStage {
                spec: stage_spec,
                stage,
                inputs,
                outputs,
            });
        }
        for s in &stages {
            if s.stage.after_publish() && !(s.inputs.is_empty() && s.outputs.is_empty()) {
                return Err(Error::Internal(format!(
                    "stage `{}` ({}) runs after publishing but names run tables",
                    s.spec.id, s.spec.kind
                )));
            }
        }
        let mut stages = order(&file, stages)?;
        // Stages that act on what the run published come last, in file order: the runner
        // runs them after the publish, and reports stages in plan order.
        stages.sort_by_key(|s| s.stage.after_publish());
        Ok(Plan {
            name: spec.name,
            file,
            vars,
            runs,
            storage: stores,
            engine,
            stages,
        })
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The nearest `sql/` directory at or above `dir`.
fn find_sql_dir(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().map(|d| d.join("sql")).find(|d| d.is_dir())
}

/// Sorts stages so each comes after its producers, keeping file order where the graph allows.
fn order(file: &Path, stages: Vec<PlannedStage>) -> Result<Vec<PlannedStage>> {
    let mut producer: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in stages.iter().enumerate() {
        for o in &s.outputs {
            if let Some(&j) = producer.get(o.as_str()) {
                return Err(Error::Invalid {
                    file: file.to_path_buf(),
                    message: format!(
                        "table `{o}` is produced by both stage `{}` and stage `{}`; a table has one producer",
                        stages[j].spec.id, s.spec.id
                    ),
                });
            }
            producer.insert(o, i);
        }
    }
    let mut deps: Vec<BTreeSet<usize>> = Vec::with_capacity(stages.len());
    for s in &stages {
        let mut d = BTreeSet::new();
        for input in &s.inputs {
            match producer.get(input.as_str()) {
                Some(&j) => {
                    d.insert(j);
                }
                None => {
                    return Err(Error::DanglingInput {
                        file: file.to_path_buf(),
                        stage: s.spec.id.clone(),
                        table: input.clone(),
                        produced: producer.keys().map(|k| k.to_string()).collect(),
                    });
                }
            }
        }
        deps.push(d);
    }
    // Depth-first search: finds a cycle with its path, else a topological order.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        deps: &[BTreeSet<usize>],
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        out: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        match marks[i] {
            Mark::Done => return None,
            Mark::Active => {
                let start = path.iter().position(|&p| p == i).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(i);
                return Some(cycle);
            }
            Mark::New => {}
        }
        marks[i] = Mark::Active;
        path.push(i);
        for &d in &deps[i] {
            if let Some(c) = visit(d, deps, marks, path, out) {
                return Some(c);
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        out.push(i);
        None
    }
    let mut marks = vec![Mark::New; stages.len()];
    let mut sorted = Vec::with_capacity(stages.len());
    for i in 0..stages.len() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(i, &deps, &mut marks, &mut path, &mut sorted) {
            // The path runs from a consumer to its producers; print it in data-flow order.
            let mut names: Vec<String> = cycle.iter().map(|&c| stages[c].spec.id.clone()).collect();
            names.reverse();
            return Err(Error::Cycle {
                file: file.to_path_buf(),
                cycle: names,
            });
        }
    }
    let mut slots: Vec<Option<PlannedStage>> = stages.into_iter().map(Some).collect();
    Ok(sorted
        .into_iter()
        .map(|i| slots[i].take().expect("each stage is sorted once"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::{StageContext, StageFactory};

    /// A kind for graph tests: `reads: [..]`, `writes: x`.
    struct Fake;
    #[derive(Debug)]
    struct FakeStage(Vec<String>, Vec<String>);
    #[async_trait::async_trait]
    impl Stage for FakeStage {
        fn inputs(&self) -> Vec<String> {
            self.0.clone()
        }
        fn outputs(&self) -> Vec<String> {
            self.1.clone()
        }
        async fn run(&self, _cx: &StageContext<'_>) -> Result<()> {
            Ok(())
        }
        async fn fingerprint(
            &self,
            _ctx: &datafusion::prelude::SessionContext,
            _run: &crate::stage::RunInfo,
            _f: &mut crate::fingerprint::Fingerprint,
        ) -> Result<()> {
            Ok(())
        }
    }
    impl StageFactory for Fake {
        fn kind(&self) -> &'static str {
            "test.fake"
        }
        fn summary(&self) -> &'static str {
            "test"
        }
        fn example_yaml(&self) -> &'static str {
            ""
        }
        fn build(&self, spec: &StageSpec, _cx: &BuildContext<'_>) -> Result<Box<dyn Stage>> {
            Ok(Box::new(FakeStage(
                spec.inputs.clone(),
                spec.output.clone().into_iter().collect(),
            )))
        }
    }

    fn load(text: &str) -> Result<Plan> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sql")).unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, text).unwrap();
        let mut reg = Registry::new();
        reg.register(Fake);
        Plan::load(&file, &[], &reg)
    }

    #[test]
    fn stages_run_after_their_producers() {
        let p = load(
            "name: p\nruns: /tmp/r\nstages:\n- {id: c, kind: test.fake, inputs: [b], output: c}\n\
             - {id: a, kind: test.fake, output: a}\n- {id: b, kind: test.fake, inputs: [a], output: b}\n",
        )
        .unwrap();
        let ids: Vec<_> = p.stages.iter().map(|s| s.spec.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn cycle_names_the_stages_in_it() {
        let err = load(
            "name: p\nruns: /tmp/r\nstages:\n- {id: a, kind: test.fake, inputs: [c], output: a}\n\
             - {id: b, kind: test.fake, inputs: [a], output: b}\n- {id: c, kind: test.fake, inputs: [b], output: c}\n",
        )
        .unwrap_err();
        assert!(matches!(err, Error::Cycle { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("the stages form a cycle: a -> b -> c -> a"),
            "{err}"
        );
    }

    #[test]
    fn dangling_input_lists_produced_tables() {
        let err = load("name: p\nruns: /tmp/r\nstages:\n- {id: a, kind: test.fake, inputs: [nope], output: a}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "stage `a` reads table `nope`, which no stage produces; tables produced: a"
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_kind_lists_registered_kinds_with_position() {
        let err = load("name: p\nruns: /tmp/r\nstages:\n  - id: a\n    kind: nope.x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("p.yaml:5:5: stage `a` has unknown kind `nope.x`; the registered kinds are: test.fake"), "{err}");
    }

    #[test]
    fn duplicate_ids_and_outputs_are_rejected() {
        assert!(load("name: p\nruns: r\nstages:\n- {id: a, kind: test.fake}\n- {id: a, kind: test.fake}\n").is_err());
        let err = load("name: p\nruns: r\nstages:\n- {id: a, kind: test.fake, output: t}\n- {id: b, kind: test.fake, output: t}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("produced by both stage `a` and stage `b`"),
            "{err}"
        );
    }
}
