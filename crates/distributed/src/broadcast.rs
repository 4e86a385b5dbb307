//! No join that answers for its build side's unmatched rows is broadcast.
//!
//! A hash join in `CollectLeft` mode, and every nested-loop join, reads its whole left
//! (build) input and one slice of its right. In one process DataFusion shares the build side
//! between the partitions and one of them emits the build rows no partition matched (a left
//! or full join) or the semi/anti answers. On a cluster each task has its own copy: every
//! task would emit those rows, once per task. DataFusion's join selection picks `CollectLeft`
//! for any join type with a small build side, and Ballista's static planner keeps it. So the
//! scheduler's planner ends with this rule, after join selection and before distribution is
//! enforced: such a hash join is partitioned instead (both sides by the join keys), and such
//! a nested-loop join is turned round, its other side collected, when its type allows.

use std::sync::Arc;

use segflow_core::datafusion::common::JoinType;
use segflow_core::datafusion::common::tree_node::{Transformed, TreeNode};
use segflow_core::datafusion::config::ConfigOptions;
use segflow_core::datafusion::error::Result;
use segflow_core::datafusion::physical_optimizer::PhysicalOptimizerRule;
use segflow_core::datafusion::physical_plan::ExecutionPlan;
use segflow_core::datafusion::physical_plan::joins::{
    HashJoinExec, NestedLoopJoinExec, PartitionMode,
};

/// Whether every output row of a join of this type is decided by one right (probe) row: such
/// a join may read all of its left side in every task.
fn probe_driven(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner
            | JoinType::Right
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::RightMark
    )
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct NoUnsafeBroadcast;

impl PhysicalOptimizerRule for NoUnsafeBroadcast {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(join) = node.downcast_ref::<HashJoinExec>()
                && *join.partition_mode() == PartitionMode::CollectLeft
                && !probe_driven(*join.join_type())
            {
                let partitioned = join
                    .builder()
                    .with_partition_mode(PartitionMode::Partitioned)
                    .build()?;
                return Ok(Transformed::yes(
                    Arc::new(partitioned) as Arc<dyn ExecutionPlan>
                ));
            }
            if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>()
                && !probe_driven(*join.join_type())
                && join.join_type().supports_swap()
                && probe_driven(join.join_type().swap())
            {
                return Ok(Transformed::yes(join.swap_inputs()?));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "segflow_no_unsafe_broadcast"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// DataFusion's physical optimizer rules with [`NoUnsafeBroadcast`] right after join
/// selection.
pub fn physical_optimizer_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules =
        segflow_core::datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    let at = rules
        .iter()
        .position(|r| r.name() == "join_selection")
        .map_or(rules.len(), |i| i + 1);
    rules.insert(at, Arc::new(NoUnsafeBroadcast));
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use segflow_core::datafusion::prelude::SessionContext;

    /// The join line of the physical plan of `sql` over two tables of one and of many rows,
    /// with segflow's scheduler rules or DataFusion's own.
    async fn join_of(sql: &str, segflow: bool) -> String {
        let mut state =
            segflow_core::datafusion::execution::SessionStateBuilder::new().with_default_features();
        if segflow {
            state = state.with_physical_optimizer_rules(physical_optimizer_rules());
        }
        let state = state.build();
        let ctx = SessionContext::new_with_state(state);
        ctx.sql("create table small as values (1, 'a')")
            .await
            .unwrap();
        ctx.sql("create table big as select value % 7 as column1, 'x' as column2 from generate_series(1, 1000)")
            .await
            .unwrap();
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let shown = segflow_core::datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        shown
            .lines()
            .find(|l| l.contains("Join"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    #[tokio::test]
    async fn a_left_join_with_a_small_left_side_is_not_broadcast() {
        let sql = "select * from small left join big on small.column1 = big.column1";
        // DataFusion alone broadcasts it, which only one process may do.
        assert!(join_of(sql, false).await.contains("mode=CollectLeft"));
        let join = join_of(sql, true).await;
        assert!(join.contains("mode=Partitioned"), "{join}");
    }

    #[tokio::test]
    async fn a_right_join_with_a_small_left_side_still_is() {
        let sql = "select * from small right join big on small.column1 = big.column1";
        let join = join_of(sql, true).await;
        assert!(join.contains("mode=CollectLeft"), "{join}");
    }
}
