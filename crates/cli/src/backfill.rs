//! `segflow backfill`: one run per as_of date over a range, oldest first.
//!
//! Each period is an ordinary run with `--var as_of=DATE`, so it publishes atomically or not at
//! all. A period counts as done when a succeeded run of the pipeline with that as_of has a
//! manifest under the pipeline's `runs`; a rerun of the backfill skips done periods (unless
//! `--force`), so a backfill stopped by a failure or a kill resumes where it stopped. Ingest is
//! incremental, so the periods after the first read no input file again.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use chrono::{Days, Months, NaiveDate};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use segflow_core::{manifest, runner, session, storage};

use tokio_util::sync::CancellationToken;

use crate::cluster::Engine;
use crate::{load, out};

#[derive(clap::Args)]
pub struct Args {
    pipeline: PathBuf,
    /// First as_of date (YYYY-MM-DD).
    #[arg(long)]
    from: NaiveDate,
    /// Last as_of date; the last period is the latest one on or before it.
    #[arg(long)]
    to: NaiveDate,
    /// Step between as_of dates; `month` keeps the day of month of --from (clamped to the
    /// month's length: Jan 31, Feb 28, Mar 31, ...).
    #[arg(long, value_enum, default_value = "month")]
    every: Every,
    /// Override a pipeline var (not `as_of`, which the backfill sets).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = crate::parse_var)]
    vars: Vec<(String, String)>,
    /// Rerun periods that already succeeded.
    #[arg(long)]
    force: bool,
    /// Partitions (threads) per query; default: the number of cores.
    #[arg(long)]
    target_partitions: Option<usize>,
    /// Memory for query execution, e.g. 2GiB; operators spill to disk past it.
    #[arg(long, value_parser = crate::parse_size)]
    memory_limit: Option<usize>,
    /// Where the plans run: `local` or `ballista://HOST:PORT`; default: the pipeline's
    /// `engine:`, else local.
    #[arg(long, env = "SEGFLOW_ENGINE")]
    engine: Option<String>,
    #[command(flatten)]
    lease: crate::LeaseArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Every {
    Day,
    Week,
    Month,
}

/// The as_of dates from `from` to `to` (inclusive), `every` apart.
pub fn periods(from: NaiveDate, to: NaiveDate, every: Every) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    for n in 0u32.. {
        let date = match every {
            Every::Day => from.checked_add_days(Days::new(n.into())),
            Every::Week => from.checked_add_days(Days::new(7 * u64::from(n))),
            // From `from` each time, so a clamped month (Feb 28) does not shift the rest.
            Every::Month => from.checked_add_months(Months::new(n)),
        };
        match date {
            Some(d) if d <= to => out.push(d),
            _ => break,
        }
    }
    out
}

pub async fn run(args: Args, cancel: CancellationToken) -> ExitCode {
    let invalid = |message: String| out::invalid(&message);
    if args.from > args.to {
        return invalid(format!(
            "--from {} is after --to {}; give the earliest date first",
            args.from, args.to
        ));
    }
    if args.vars.iter().any(|(k, _)| k == "as_of") {
        return invalid("--var as_of is set by the backfill for each period; drop it".into());
    }
    let plan = match load(&args.pipeline, &args.vars) {
        Ok(p) => p,
        Err(e) => return out::fail(&e, e.class()),
    };
    if plan.vars.get("as_of").is_none() {
        return invalid(format!(
            "{}: the pipeline declares no `as_of` var for the backfill to set",
            args.pipeline.display()
        ));
    }
    let engine = match Engine::resolve(args.engine.as_deref(), &plan) {
        Ok(e) => e,
        Err(e) => return invalid(e),
    };
    let options = session::SessionOptions {
        target_partitions: args.target_partitions,
        memory_limit_bytes: args.memory_limit,
    };
    // Manifests are read from this process: no cluster needed for that.
    let done = async {
        let ctx = session::new_session(&options)?;
        storage::configure(&ctx, &plan.storage)?;
        manifest::succeeded_values(&ctx, &plan.runs, &plan.name, "as_of").await
    };
    let done = match done.await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("reading earlier runs under {}:", plan.runs);
            return out::fail(&e, e.class());
        }
    };

    let periods = periods(args.from, args.to, args.every);
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::with_draw_target(Some(periods.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} periods, {msg} {elapsed}")
            .expect("valid template"),
    );
    // A line per period; in JSON mode an event with the period and what happened to it.
    let say = |event: &str, fields: serde_json::Value, line: String| match crate::log::format() {
        crate::log::Format::Json => {
            crate::log::event("info", None, None, event, fields, String::new)
        }
        crate::log::Format::Text if bar.is_hidden() => eprintln!("{line}"),
        crate::log::Format::Text => bar.println(line),
    };
    let (mut ran, mut skipped) = (0, 0);
    for (i, date) in periods.iter().enumerate() {
        let as_of = date.format("%Y-%m-%d").to_string();
        let tag = format!("[{}/{}] as_of {as_of}", i + 1, periods.len());
        bar.set_message(as_of.clone());
        if done.contains(&as_of) && !args.force {
            say(
                "period_skipped",
                serde_json::json!({ "as_of": as_of }),
                format!("{tag}: already published, skipped (--force reruns it)"),
            );
            skipped += 1;
            bar.inc(1);
            continue;
        }
        let mut vars = args.vars.clone();
        vars.push(("as_of".into(), as_of.clone()));
        let plan = match load(&args.pipeline, &vars) {
            Ok(p) => p,
            Err(e) => return out::fail(&e, e.class()),
        };
        let ctx = match engine.session(&options).await {
            Ok(c) => c,
            Err(e) => return out::fail(&e, e.class()),
        };
        let started = Instant::now();
        let outcome = runner::run(
            &ctx,
            &plan,
            &segflow_core::stage::Quiet,
            &runner::RunOptions {
                cancel: cancel.clone(),
                lease: args.lease.options(),
                ..Default::default()
            },
        )
        .await;
        if let Some(e) = outcome.error {
            bar.abandon();
            crate::log::event(
                "error",
                Some(&outcome.manifest.run_id),
                None,
                "period_failed",
                serde_json::json!({ "as_of": as_of }),
                || {
                    format!(
                        "{tag}: failed; periods before it are published, rerun the same \
                         command to resume"
                    )
                },
            );
            return out::fail(&e, e.class());
        }
        say(
            "period_published",
            serde_json::json!({
                "as_of": as_of,
                "run_id": outcome.manifest.run_id,
                "duration_ms": started.elapsed().as_millis() as u64,
            }),
            format!(
                "{tag}: published in {:.1}s (run {})",
                started.elapsed().as_secs_f64(),
                outcome.manifest.run_id
            ),
        );
        ran += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let every = match args.every {
        Every::Day => "day",
        Every::Week => "week",
        Every::Month => "month",
    };
    // The periods are published: a reader that went away does not change that.
    let _ = out::emit(&format!(
        "backfill {} from {} to {} every {every}: {ran} run, {skipped} already published\n",
        plan.name, args.from, args.to
    ));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn periods_step_and_stop_at_to() {
        assert_eq!(
            periods(d("2026-01-31"), d("2026-04-30"), Every::Month),
            [
                d("2026-01-31"),
                d("2026-02-28"),
                d("2026-03-31"),
                d("2026-04-30")
            ]
        );
        assert_eq!(
            periods(d("2026-01-01"), d("2026-01-20"), Every::Week),
            [d("2026-01-01"), d("2026-01-08"), d("2026-01-15")]
        );
        assert_eq!(
            periods(d("2026-01-01"), d("2026-01-01"), Every::Day),
            [d("2026-01-01")]
        );
    }
}
