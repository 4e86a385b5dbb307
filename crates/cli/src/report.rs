//! `segflow report PIPELINE`: the HTML report of the pipeline's published run, rendered without
//! running anything (the same page the pipeline's `export.report` stage writes after a run).

use std::path::PathBuf;
use std::process::ExitCode;

use segflow_core::{ErrorClass, session, storage};
use segflow_export::published::Published;
use segflow_export::report;

use crate::out;

/// `segflow report`.
#[derive(clap::Args)]
pub struct Args {
    /// The pipeline whose published tables to report (its `runs:`, `storage:` and
    /// `export.report` stage).
    pipeline: PathBuf,
    /// Override a pipeline var: --var output=s3://bucket/segments
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = crate::parse_var)]
    vars: Vec<(String, String)>,
    /// Where to write the HTML (a path or a URL); default: the `path` of the pipeline's
    /// `export.report` stage.
    #[arg(long, value_name = "FILE")]
    out: Option<String>,
}

pub async fn run(args: Args) -> ExitCode {
    let plan = match crate::load(&args.pipeline, &args.vars) {
        Ok(p) => p,
        Err(e) => return out::fail(&e, e.class()),
    };
    let stage = plan.stages.iter().find_map(|s| report::config_of(&s.spec));
    // The runs folder the report stage reads, else the pipeline's.
    let runs = match stage.as_ref().map(|c| storage::parse_location(&c.runs)) {
        Some(Ok(u)) => storage::as_dir(&u),
        Some(Err(e)) => return out::fail(&e, ErrorClass::Invalid),
        None => plan.runs.clone(),
    };
    let Some(target) = args.out.or(stage.map(|c| c.path)) else {
        return out::invalid(&format!(
            "{} has no `export.report` stage to say where the report goes; pass --out FILE",
            args.pipeline.display()
        ));
    };
    let target = match storage::parse_location(&target) {
        Ok(u) => u,
        Err(e) => return out::fail(&e, ErrorClass::Invalid),
    };
    // Tables to read at their latest versions when the output has no _published.json.
    let tables: Vec<(String, url::Url)> = plan
        .stages
        .iter()
        .flat_map(|s| s.stage.publish_targets())
        .map(|r| (r.display_name().to_string(), r.url.clone()))
        .collect();
    let started = std::time::Instant::now();
    let done = async {
        let ctx = session::new_session(&session::SessionOptions::default())?;
        storage::configure(&ctx, &plan.storage)?;
        let published = Published::read_or_latest(&ctx, &runs, &plan.name, &tables).await?;
        let rendered = report::render(&ctx, &published).await?;
        let bytes = rendered.html.len();
        report::write(&ctx, &target, rendered.html).await?;
        Ok::<_, segflow_core::Error>((rendered.run_id, bytes))
    };
    match done.await {
        Ok((run_id, bytes)) => out::emit_result(&format!(
            "wrote {target} ({bytes} bytes, {:.2} s): {}\n",
            started.elapsed().as_secs_f64(),
            match run_id {
                Some(id) => format!("run {id}"),
                None => "no _published.json, so the tables at their latest versions".into(),
            }
        )),
        Err(e) => out::fail(&e, e.class()),
    }
}
