//! k-means on generated data: the same clusters whatever the number of threads and whether
//! passes run in memory or as DataFusion aggregates, every
//! clustered customer in its nearest center's cluster (recomputed here in SQL), sizes that match
//! the centers table, and data errors that say what to change.

use std::path::Path;

use crate::{query_tables as query, text};

fn run_with_partitions(input: &Path, output: &Path, partitions: usize) {
    run_pipeline(&crate::default_pipeline(), input, output, partitions);
}

/// The default pipeline, written to `dir`, with its clusters stage's passes as DataFusion
/// aggregates (`passes: plan`) instead of in-memory loops.
fn plan_passes_pipeline(dir: &Path) -> std::path::PathBuf {
    let root = segflow_testkit::repo_root();
    let text = std::fs::read_to_string(crate::default_pipeline()).unwrap();
    let contracts = root.join("pipelines/contracts");
    let changed = text
        .replace(
            "contract: contracts/",
            &format!("contract: {}/", contracts.display()),
        )
        // The pipeline's own runs folder, the first match (the sync stage names it too).
        .replacen(
            "runs: ${output}/_runs\n",
            &format!(
                "runs: ${{output}}/_runs\nsql_dir: {}\n",
                root.join("sql").display()
            ),
            1,
        )
        .replace("    seed: 2026\n", "    seed: 2026\n    passes: plan\n");
    assert_eq!(changed.matches("passes: plan").count(), 1);
    assert!(changed.contains("sql_dir:"));
    let path = dir.join("plan_passes.yaml");
    std::fs::write(&path, changed).unwrap();
    path
}

fn run_pipeline(pipeline: &Path, input: &Path, output: &Path, partitions: usize) {
    let partitions = partitions.to_string();
    let out = crate::run_with(
        pipeline,
        input,
        output,
        &["--target-partitions", &partitions],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn clusters_are_the_same_whatever_the_threads_and_each_customer_is_nearest_its_center() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    crate::generate(&input, 3000, 31);
    let one = dir.path().join("one");
    let four = dir.path().join("four");
    let plan = dir.path().join("plan");
    run_with_partitions(&input, &one, 1);
    run_with_partitions(&input, &four, 4);
    run_pipeline(&plan_passes_pipeline(dir.path()), &input, &plan, 3);

    let all = |output: &Path, table: &str| {
        query(
            output,
            &[table],
            &format!("select * from {table} order by 1"),
        )
    };
    for table in ["cluster_centers", "cluster_scores"] {
        let a = all(&one, table);
        assert!(!a.is_empty(), "{table} is empty");
        assert_eq!(
            a,
            all(&four, table),
            "{table} differs between 1 and 4 threads"
        );
        assert_eq!(
            a,
            all(&plan, table),
            "{table} differs between in-memory passes and DataFusion aggregate passes"
        );
    }
    let ids = "select customer_id, cluster_id, cluster_label from customer_segments order by 1";
    let a = query(&one, &["customer_segments"], ids);
    assert_eq!(a.len(), 3000, "one row per customer");
    assert_eq!(a, query(&four, &["customer_segments"], ids));
    assert_eq!(a, query(&plan, &["customer_segments"], ids));

    // Exactly one k was chosen, with the best silhouette of those tried.
    let chosen = query(
        &one,
        &["cluster_scores", "cluster_centers"],
        "select s.k, s.silhouette = (select max(silhouette) from cluster_scores), \
         (select count(*) from cluster_centers) \
         from cluster_scores s where s.chosen",
    );
    assert_eq!(chosen.len(), 1, "{chosen:?}");
    assert_eq!(chosen[0][1], "true");
    assert_eq!(chosen[0][0], chosen[0][2], "k rows in cluster_centers");

    // Null cluster exactly for customers without orders; sizes and shares as published.
    let sizes = query(
        &one,
        &["customer_segments", "cluster_centers"],
        "select c.cluster_id, c.customers, count(s.customer_id), \
         round(c.share - cast(count(s.customer_id) as double) / (select count(cluster_id) from customer_segments), 12) \
         from cluster_centers c left join customer_segments s on s.cluster_id = c.cluster_id \
         group by c.cluster_id, c.customers, c.share order by 1",
    );
    for row in &sizes {
        assert_eq!(row[1], row[2], "cluster size {row:?}");
        assert_eq!(row[3], "0.0", "share {row:?}");
    }
    let mismatched = query(
        &one,
        &["customer_segments"],
        "select count(*) from customer_segments where (cluster_id is null) <> (frequency is null)",
    );
    assert_eq!(mismatched, [["0"]]);

    // Recompute the features (log1p, then z-score over the clustered customers) and the
    // nearest center in SQL: every customer is in the cluster of its nearest center.
    let wrong = query(
        &one,
        &["customer_features", "customer_segments", "cluster_centers"],
        "with x as ( \
            select customer_id, ln(1 + recency_days) as r, ln(1 + frequency) as f, \
                   ln(1 + greatest(cast(monetary as double), 0)) as m \
            from customer_features where frequency is not null), \
         z as ( \
            select customer_id, \
                (r - avg(r) over ()) / stddev_pop(r) over () as r, \
                (f - avg(f) over ()) / stddev_pop(f) over () as f, \
                (m - avg(m) over ()) / stddev_pop(m) over () as m from x), \
         d as ( \
            select z.customer_id, c.cluster_id, \
                row_number() over (partition by z.customer_id order by \
                    power(z.r - c.recency_days_scaled, 2) + power(z.f - c.frequency_scaled, 2) \
                    + power(z.m - c.monetary_scaled, 2)) as rank \
            from z cross join cluster_centers c) \
         select count(*) from d join customer_segments s on s.customer_id = d.customer_id \
         where d.rank = 1 and d.cluster_id <> s.cluster_id",
    );
    assert_eq!(
        wrong,
        [["0"]],
        "customers not in their nearest center's cluster"
    );

    // Centers in original units: log1p and z-score undone, between the members' extremes.
    let bounds = query(
        &one,
        &["customer_segments", "cluster_centers"],
        "select count(*) from cluster_centers c where not exists ( \
            select 1 from customer_segments s where s.cluster_id = c.cluster_id \
            group by s.cluster_id \
            having c.recency_days between min(s.recency_days) and max(s.recency_days) \
               and c.frequency between min(s.frequency) and max(s.frequency))",
    );
    assert_eq!(bounds, [["0"]], "centers outside their members' range");
}

#[test]
fn data_that_cannot_be_clustered_fails_with_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let stages = |extra: &str| {
        format!(
            r#"  - {{ id: customers, kind: ingest.csv, path: "${{input}}/customers.csv", contract: {{contracts}}/customers.yaml, output: customers }}
  - id: clusters
    kind: segment.kmeans
    inputs: [customers]
    output: clustered
    centers: centers
{extra}"#
        )
    };
    let input = segflow_testkit::repo_root().join("tests/data/sample");
    let cases = [
        (
            "    key: customer_id\n    features: [{ name: income, expr: annual_income }]\n    k: 3\n",
            "feature `income` (`annual_income`) is null or not finite in 79 of the 1000 rows to cluster",
        ),
        (
            "    key: customer_id\n    where: \"annual_income < 4500\"\n    features: [{ name: income, expr: annual_income }]\n    k: 3\n",
            "only 2 rows to cluster, fewer than k = 3",
        ),
        (
            "    key: customer_id\n    where: \"annual_income is not null\"\n    features: [{ name: income, expr: \"annual_income - 1e9\", transforms: [log1p] }]\n    k: 3\n",
            "feature `income`: log1p needs values above -1",
        ),
        (
            "    key: country\n    features: [{ name: income, expr: \"coalesce(annual_income, 0)\" }]\n    k: 3\n",
            "key `country` is not unique among the rows to cluster",
        ),
    ];
    for (i, (extra, expected)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let pipeline = crate::write_pipeline(dir.path(), &name, &stages(extra));
        let out = crate::run(&pipeline, &input, &dir.path().join(&name), &[]);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "case {i}: expected `{expected}`\n{}",
            text(&out)
        );
    }
}
