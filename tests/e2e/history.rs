//! Segments over time on generated data: the history keeps one partition per as_of (a rerun
//! replaces its own), migrations and the change feed equal a join of consecutive snapshots,
//! and campaign metrics equal a direct recomputation from the staged events and orders.

use std::path::Path;

use crate::{default_pipeline, query_tables as query, run, table_url, text};

fn run_at(input: &Path, output: &Path, as_of: &str) {
    let out = run(
        &default_pipeline(),
        input,
        output,
        &[&format!("as_of={as_of}")],
    );
    assert!(out.status.success(), "as_of {as_of}: {}", text(&out));
}

/// The migrations a join of the two snapshots in segment_history gives.
const JOINED_MIGRATIONS: &str = "
    with cur as (select * from segment_history where as_of = DATE '2026-10-01'),
         prev as (select * from segment_history where as_of = DATE '2026-08-01')
    select 'rfm', coalesce(p.rfm_segment, 'new'), c.rfm_segment, count(*)
    from cur c left join prev p on p.customer_id = c.customer_id
    group by 1, 2, 3
    union all
    select 'engagement', coalesce(p.engagement_segment, 'new'), c.engagement_segment, count(*)
    from cur c left join prev p on p.customer_id = c.customer_id
    group by 1, 2, 3
    union all
    select 'clv', coalesce(p.clv_segment, 'new'), c.clv_segment, count(*)
    from cur c left join prev p on p.customer_id = c.customer_id
    group by 1, 2, 3
    order by 1, 2, 3";

#[test]
fn history_migrations_changes_and_campaigns_follow_the_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    crate::generate(&input, 500, 41);
    let output = dir.path().join("out");

    // First run: no previous snapshot, so everyone is new and the change feed is empty.
    run_at(&input, &output, "2026-08-01");
    let first = query(
        &output,
        &["segment_migrations", "segment_changes"],
        "select (select count(*) from segment_changes) as changes, \
                (select count(*) from segment_migrations where from_segment <> 'new' or from_as_of is not null) as old, \
                (select sum(customers) from segment_migrations where segmentation = 'rfm') as rfm",
    );
    assert_eq!(first, [["0", "0", "500"]]);

    run_at(&input, &output, "2026-10-01");
    let partitions = query(
        &output,
        &["segment_history"],
        "select cast(as_of as varchar) as d, count(*) from segment_history group by as_of order by d",
    );
    assert_eq!(partitions, [["2026-08-01", "500"], ["2026-10-01", "500"]]);

    let migrations = query(
        &output,
        &["segment_migrations"],
        "select segmentation, from_segment, to_segment, customers from segment_migrations \
         where segmentation in ('rfm', 'engagement', 'clv') and from_as_of = DATE '2026-08-01' \
         and to_as_of = DATE '2026-10-01' order by 1, 2, 3",
    );
    assert!(migrations.len() > 5, "{migrations:?}");
    assert_eq!(
        migrations,
        query(&output, &["segment_history"], JOINED_MIGRATIONS)
    );
    let sums = query(
        &output,
        &["segment_migrations"],
        "select segmentation, sum(customers) from segment_migrations \
         where to_as_of = DATE '2026-10-01' group by 1 order by 1",
    );
    assert!(sums.iter().all(|r| r[1] == "500"), "{sums:?}");

    // Cluster ids carry over: customers in a cluster two months ago are mostly in the cluster
    // with the same id now.
    let stay = query(
        &output,
        &["segment_migrations"],
        "with m as (select from_segment, to_segment, customers from segment_migrations \
                    where segmentation = 'cluster' and to_as_of = DATE '2026-10-01' \
                    and from_segment not in ('new', 'unclustered') and to_segment <> 'unclustered'), \
              top as (select from_segment, to_segment, \
                      row_number() over (partition by from_segment order by customers desc) as r from m) \
         select count(*) filter (where from_segment = to_segment), count(*) from top where r = 1",
    );
    assert!(stay[0][1] != "0" && stay[0][0] == stay[0][1], "{stay:?}");

    // The change feed is exactly the customers whose segment differs between the snapshots.
    let changes = query(
        &output,
        &["segment_changes"],
        "select customer_id, from_segment, to_segment from segment_changes \
         where segmentation = 'rfm' order by 1",
    );
    let joined = query(
        &output,
        &["segment_history"],
        "with cur as (select * from segment_history where as_of = DATE '2026-10-01'), \
              prev as (select * from segment_history where as_of = DATE '2026-08-01') \
         select c.customer_id, coalesce(p.rfm_segment, 'new'), c.rfm_segment \
         from cur c left join prev p on p.customer_id = c.customer_id \
         where p.rfm_segment is distinct from c.rfm_segment order by 1",
    );
    assert!(!changes.is_empty());
    assert_eq!(changes, joined);

    // Campaign metrics over all segments of one segmentation equal a direct count, for every
    // campaign with counted activity: email events, attributed orders, or both.
    let ours = query(
        &output,
        &["campaign_performance"],
        "select campaign_id, sum(sends), sum(opens), sum(clicks), sum(conversions), sum(revenue) \
         from campaign_performance where segmentation = 'geographic' group by 1 order by 1",
    );
    let direct = query(
        &output,
        &["staging/events", "staging/orders"],
        "with e as (select campaign_id, \
                      count(distinct case when event_type = 'email_sent' then customer_id end) as s, \
                      count(distinct case when event_type = 'email_open' then customer_id end) as o, \
                      count(distinct case when event_type = 'email_click' then customer_id end) as c \
                    from events where event_ts < TIMESTAMP '2026-10-01T00:00:00Z' \
                    and campaign_id is not null \
                    and event_type in ('email_sent', 'email_open', 'email_click') group by 1), \
              v as (select campaign_id, count(distinct customer_id) as n, sum(amount) as r from orders \
                    where order_ts < TIMESTAMP '2026-10-01T00:00:00Z' and campaign_id is not null \
                    group by 1) \
         select coalesce(e.campaign_id, v.campaign_id), coalesce(e.s, 0), coalesce(e.o, 0), \
                coalesce(e.c, 0), coalesce(v.n, 0), coalesce(v.r, 0) \
         from e full join v on v.campaign_id = e.campaign_id order by 1",
    );
    assert!(!direct.is_empty());
    assert_eq!(ours, direct);
    // Campaigns first sent on or after the first snapshot take their segments from it; those
    // sent before any snapshot from this run's.
    let snapshots = query(
        &output,
        &["campaign_performance", "staging/events"],
        "with f as (select campaign_id, min(cast(event_ts as date)) as first from events \
                    where event_type = 'email_sent' and event_ts < TIMESTAMP '2026-10-01T00:00:00Z' \
                    group by 1) \
         select count(*) filter (where p.snapshot_as_of is not distinct from \
                    case when f.first >= DATE '2026-08-01' then DATE '2026-08-01' end) as right, \
                count(*) filter (where p.snapshot_as_of is not null) as from_history, count(*) as all \
         from campaign_performance p join f on f.campaign_id = p.campaign_id",
    );
    let [right, from_history, all] = &snapshots[0][..] else {
        panic!("{snapshots:?}")
    };
    assert_eq!(right, all, "{snapshots:?}");
    assert!(from_history != "0" && from_history != all, "{snapshots:?}");

    // Rerunning an as_of replaces its partition in one commit and changes no row.
    let before = query(
        &output,
        &["segment_history"],
        "select * from segment_history order by as_of, customer_id",
    );
    let version = |output: &Path| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(segflow_testkit::delta::query(
            &table_url(output, "segment_history"),
            "select 1",
        ))
        .0
    };
    let v = version(&output);
    run_at(&input, &output, "2026-10-01");
    assert_eq!(version(&output), v + 1);
    assert_eq!(
        before,
        query(
            &output,
            &["segment_history"],
            "select * from segment_history order by as_of, customer_id",
        )
    );
}

#[test]
fn replace_partitions_replaces_only_the_runs_partitions_and_an_empty_run_adds_no_version() {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("sql");
    std::fs::create_dir_all(&sql).unwrap();
    std::fs::write(
        sql.join("rows.sql"),
        "select cast($day as date) as day, cast($value as bigint) as value \
         from (values (1), (2)) as t(n) where t.n <= $rows",
    )
    .unwrap();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        r#"name: partitions
vars:
  output: { default: "" }
  day: { default: "" }
  value: { default: "0" }
  rows: { default: "2" }
runs: ${output}/_runs
stages:
  - { id: rows, kind: features.sql, sql: rows.sql, params: { day: "${day}", value: "${value}", rows: "${rows}" }, output: rows }
  - id: publish
    kind: export.delta
    tables:
      rows: { path: "${output}/t", partition_by: [day], mode: replace_partitions }
"#,
    )
    .unwrap();
    let output = dir.path().join("out");
    let run = |day: &str, value: &str, rows: &str| {
        let out = crate::segflow()
            .arg("run")
            .arg(&pipeline)
            .args(["--var", &format!("output={}", output.display())])
            .args([
                "--var",
                &format!("day={day}"),
                "--var",
                &format!("value={value}"),
            ])
            .args(["--var", &format!("rows={rows}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    let table = |sql: &str| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (version, batches) =
            rt.block_on(segflow_testkit::delta::query(&table_url(&output, "t"), sql));
        (version, segflow_testkit::delta::rows(&batches))
    };
    let all =
        "select cast(day as varchar) as d, value, count(*) from t group by day, value order by d";
    run("2026-01-01", "1", "2");
    run("2026-01-02", "2", "2");
    assert_eq!(
        table(all).1,
        [["2026-01-01", "1", "2"], ["2026-01-02", "2", "2"]]
    );
    // Rerunning a day replaces its rows only, in one commit.
    run("2026-01-01", "3", "1");
    let (version, rows) = table(all);
    assert_eq!(version, 2);
    assert_eq!(rows, [["2026-01-01", "3", "1"], ["2026-01-02", "2", "2"]]);
    // A run without rows has no partition to replace: no new version, nothing lost.
    run("2026-01-02", "4", "0");
    assert_eq!(table(all), (2, rows));
}

/// Output contract v1 only adds columns. An output published before some of them existed
/// (here: without the clv columns of customer_segments, segment_history and segment_profiles,
/// as segflow published them before CLV) takes them on the next run: the tables gain the
/// columns, the earlier snapshot reads null in them, and its customers are `new` to the clv
/// segmentation while the other segmentations compare as before.
#[test]
fn an_output_published_before_columns_were_added_takes_them_on_the_next_run() {
    use segflow_core::datafusion::prelude::SessionContext;
    use segflow_core::deltalake::operations::write::SchemaMode;
    use segflow_core::deltalake::protocol::SaveMode;

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    crate::generate(&input, 300, 12);
    let output = dir.path().join("out");
    run_at(&input, &output, "2026-08-01");

    let clv_columns = ["p_alive", "predicted_clv", "clv_segment"];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (table, drop, partition) in [
            ("customer_segments", &clv_columns[..], None),
            ("segment_history", &clv_columns[..], Some("as_of")),
            (
                "segment_profiles",
                &["mean_predicted_clv", "mean_p_alive"][..],
                None,
            ),
        ] {
            let ctx = SessionContext::new();
            let url = table_url(&output, table);
            segflow_testkit::delta::register(&ctx, "t", &url).await;
            let batches = ctx
                .table("t")
                .await
                .unwrap()
                .drop_columns(drop)
                .unwrap()
                .collect()
                .await
                .unwrap();
            let delta = segflow_core::publish::open_table(&ctx, &url).await.unwrap();
            let mut write = delta
                .write(batches)
                .with_save_mode(SaveMode::Overwrite)
                .with_schema_mode(SchemaMode::Overwrite);
            if let Some(column) = partition {
                write = write.with_partition_columns([column]);
            }
            write.await.unwrap();
        }
    });
    let old = query(
        &output,
        &["segment_history"],
        "select count(*) from segment_history",
    );
    assert_eq!(old, [["300"]]);
    assert!(
        std::panic::catch_unwind(|| query(
            &output,
            &["segment_history"],
            "select clv_segment from segment_history"
        ))
        .is_err(),
        "the history was rewritten without the clv columns"
    );

    run_at(&input, &output, "2026-10-01");
    let history = query(
        &output,
        &["segment_history"],
        "select cast(as_of as varchar), count(*), count(clv_segment), count(rfm_segment) \
         from segment_history group by 1 order by 1",
    );
    assert_eq!(
        history,
        [
            ["2026-08-01", "300", "0", "300"],
            ["2026-10-01", "300", "300", "300"]
        ]
    );
    let migrations = query(
        &output,
        &["segment_migrations"],
        "select segmentation, count(*) filter (where from_segment = 'new'), sum(customers) \
         from segment_migrations where to_as_of = DATE '2026-10-01' \
         and segmentation in ('clv', 'rfm') group by 1 order by 1",
    );
    assert_eq!(migrations[0][0], "clv");
    assert_eq!(migrations[0][2], "300");
    let clv_segments = query(
        &output,
        &["customer_segments"],
        "select count(distinct clv_segment) from customer_segments",
    );
    assert_eq!(
        migrations[0][1], clv_segments[0][0],
        "every clv segment from `new`"
    );
    assert_eq!(migrations[1], ["rfm", "0", "300"], "rfm compares as before");
    let profiles = query(
        &output,
        &["segment_profiles"],
        "select count(*), count(mean_p_alive) from segment_profiles where segmentation = 'clv'",
    );
    assert_eq!(profiles[0][0], clv_segments[0][0]);
}
