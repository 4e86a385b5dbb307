//! The logical node of a write, and how it becomes a [`WriteExec`].

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DFSchemaRef, internal_err, plan_err};
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use super::{LocalHooks, WriteExec, WriteSpec, result_schema};

/// Writes its input's rows as [`WriteSpec`] says and yields one row per file
/// ([`super::result_schema`]).
#[derive(Debug, Clone)]
pub struct WriteFiles {
    pub input: LogicalPlan,
    pub spec: WriteSpec,
    schema: DFSchemaRef,
    /// Only in the process that built the node: the plan a cluster runs never has them.
    pub(crate) hooks: Option<Arc<LocalHooks>>,
}

impl WriteFiles {
    /// A write of `input`; fails when a target names a column the input lacks.
    pub fn try_new(input: LogicalPlan, spec: WriteSpec) -> Result<Self> {
        let schema = input.schema();
        for column in spec
            .targets
            .iter()
            .flat_map(|t| t.columns.iter())
            .chain(spec.split_by.iter())
        {
            if schema.field_with_unqualified_name(column).is_err() {
                return plan_err!("a write names column `{column}`, which its input lacks");
            }
        }
        let expected = if spec.split_by.is_some() { 2 } else { 1 };
        if spec.targets.len() != expected {
            return plan_err!(
                "a write {} has {} targets, not {expected}",
                if spec.split_by.is_some() {
                    "split by a column"
                } else {
                    "without a split"
                },
                spec.targets.len()
            );
        }
        Ok(WriteFiles {
            input,
            spec,
            schema: Arc::new(DFSchema::try_from(result_schema())?),
            hooks: None,
        })
    }

    pub(crate) fn with_hooks(mut self, hooks: Arc<LocalHooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }
}

// The hooks are not part of what the node is: two writes of the same rows to the same places
// are the same node.
impl PartialEq for WriteFiles {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input && self.spec == other.spec
    }
}

impl Eq for WriteFiles {}

impl Hash for WriteFiles {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        self.spec.hash(state);
    }
}

impl PartialOrd for WriteFiles {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.input.partial_cmp(&other.input) {
            Some(Ordering::Equal) => self.spec.partial_cmp(&other.spec),
            other => other,
        }
    }
}

impl UserDefinedLogicalNodeCore for WriteFiles {
    fn name(&self) -> &str {
        "WriteFiles"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let tables: Vec<&str> = self.spec.targets.iter().map(|t| t.table.as_str()).collect();
        write!(f, "WriteFiles: {}", tables.join(", "))?;
        if let Some(by) = &self.spec.split_by {
            write!(f, " (split by {by})")?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(
        &self,
        exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        if !exprs.is_empty() || inputs.len() != 1 {
            return internal_err!("WriteFiles takes one input and no expressions");
        }
        Ok(WriteFiles {
            input: inputs.remove(0),
            spec: self.spec.clone(),
            schema: self.schema.clone(),
            hooks: self.hooks.clone(),
        })
    }
}

/// Plans [`WriteFiles`] as a [`WriteExec`], in whatever process plans it.
#[derive(Debug, Default)]
pub struct WritePlanner;

#[async_trait]
impl ExtensionPlanner for WritePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(write) = node.as_any().downcast_ref::<WriteFiles>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return internal_err!("WriteFiles has one input");
        };
        let exec = WriteExec::try_new(input.clone(), write.spec.clone())?;
        Ok(Some(Arc::new(match &write.hooks {
            Some(hooks) => exec.with_hooks(hooks.clone()),
            None => exec,
        })))
    }
}

/// The query planner of segflow's sessions: DataFusion's, knowing segflow's plan nodes.
#[derive(Debug, Default)]
pub struct SegflowQueryPlanner;

#[async_trait]
impl QueryPlanner for SegflowQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(WritePlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}
