//! The CLI's other commands: validate, plan, stages, generate.

use crate::{default_pipeline, generate, segflow, text};

#[test]
fn validate_and_plan_describe_the_default_pipeline() {
    let out = segflow()
        .arg("validate")
        .arg(default_pipeline())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("valid: 26 stages"),
        "{}",
        text(&out)
    );
    // Every default segment says what it is, so validate has nothing to warn about.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        text(&out)
    );

    let out = segflow()
        .arg("plan")
        .arg(default_pipeline())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    let pos = |s: &str| {
        plan.find(s)
            .unwrap_or_else(|| panic!("`{s}` not in plan:\n{plan}"))
    };
    assert!(pos("ingest_orders [ingest.csv]") < pos("as_of [features.sql]"));
    assert!(pos("as_of [features.sql]") < pos("rfm [features.sql]"));
    assert!(pos("features [features.sql]") < pos("rule_segments [segment.rules]"));
    assert!(pos("rule_segments [segment.rules]") < pos("publish [export.delta]"));
    assert!(
        plan.contains("reads:  customers, orders, run_as_of"),
        "{plan}"
    );
    assert!(
        plan.contains("rfm: champions <- r_score = 5 and f_score >= 4"),
        "{plan}"
    );
}

#[test]
fn stages_lists_every_kind() {
    let out = segflow().arg("stages").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "ingest.csv",
        "features.sql",
        "segment.rules",
        "export.delta",
        "export.postgres",
        "export.files",
        "export.crm",
    ] {
        assert!(s.contains(kind), "{s}");
    }
}

#[test]
fn generate_is_deterministic_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        "customers.csv",
        "orders.csv",
        "events.csv",
        "survey_responses.csv",
    ];
    let mut outputs = Vec::new();
    for (threads, seed) in [("1", 9), ("2", 9), ("2", 10)] {
        let out_dir = dir.path().join(format!("{threads}-{seed}"));
        let out = segflow()
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "generate",
                "--customers",
                "5000",
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        outputs.push(files.map(|f| std::fs::read(out_dir.join(f)).unwrap()));
    }
    assert_eq!(outputs[0], outputs[1], "same seed, different thread count");
    assert_ne!(outputs[0][1], outputs[2][1], "different seed");

    // Roughly the shape the model promises: about ten orders per customer, some never buy.
    let orders = String::from_utf8_lossy(&outputs[0][1]);
    let per_customer = (orders.lines().count() - 1) as f64 / 5000.0;
    assert!(
        (5.0..15.0).contains(&per_customer),
        "{per_customer} orders per customer"
    );
}

#[test]
fn shipped_sample_is_the_generators_output() {
    // tests/data/sample is `segflow generate --customers 1000 --seed 42`; regenerate it with
    // that command when the generator changes.
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1000, 42);
    let sample = segflow_testkit::repo_root().join("tests/data/sample");
    for f in [
        "customers.csv",
        "orders.csv",
        "events.csv",
        "survey_responses.csv",
    ] {
        assert!(
            std::fs::read(dir.path().join(f)).unwrap() == std::fs::read(sample.join(f)).unwrap(),
            "tests/data/sample/{f} is stale: regenerate with `segflow generate --customers 1000 --seed 42 --out tests/data/sample`"
        );
    }
}

#[test]
fn validate_warns_about_segments_without_a_description() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::write_pipeline(
        dir.path(),
        "undescribed",
        "  - id: rows\n    kind: ingest.csv\n    path: ${input}/customers*.csv\n    contract: {contracts}/customers.yaml\n    output: customers\n  - id: tiers\n    kind: segment.rules\n    inputs: [customers]\n    output: tiered\n    segmentation: tier\n    rules:\n      - { segment: a, when: \"country = 'US'\", description: US customers }\n      - { segment: b, when: \"country = 'CA'\" }\n    default: c\n",
    );
    let out = segflow().arg("validate").arg(&p).output().unwrap();
    // A warning, not an error: the pipeline is valid.
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: stage `tiers`: segmentation `tier`: segment `b` has no description")
            && err.contains("segment `c` has no description")
            && !err.contains("segment `a`"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 warning(s)"),
        "{}",
        text(&out)
    );
}
