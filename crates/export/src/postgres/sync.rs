//! One table's sync, in one transaction: the rows, and the Delta version they came from in
//! `<schema>.segflow_sync_state`, commit together or not at all.
//!
//! - `replace`: a new table is created and COPYed into; then the old one is dropped, the new
//!   one renamed into its place, and the views that depended on it (with their comments and
//!   grants, and the table's grants) are created again. Readers block on the swap's lock for
//!   its last statements and then read the new table: never a half-loaded one, never an error.
//! - `upsert`: the rows are COPYed into a temporary table, then `INSERT ... ON CONFLICT (key)
//!   DO UPDATE` writes the rows whose values differ (a rerun of the same version changes
//!   nothing) and a `DELETE` removes the keys that are gone. An empty table (the first sync)
//!   is COPYed into directly.
//! - `changes`: the rows of the Delta partitions that changed since the version in the state
//!   table (the watermark) replace those partitions' rows: the partitions a run of a new as_of
//!   added, or a rerun of an as_of replaced. The first sync loads every partition.
//!
//! A sync of a version that the state table already has does nothing. Syncs of one table
//! queue on an advisory lock.

use std::collections::BTreeSet;

use segflow_core::datafusion::prelude::SessionContext;
use tokio_postgres::{Client, Transaction};

use super::connect::{Target, ident, literal};
use super::copy::copy_rows;
use super::schema::{self, Column};
use crate::error::{ExportError, Result};
use crate::published::{self, Published};

/// How a table is kept in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A new table swapped in.
    Replace,
    /// Rows written by key, gone keys deleted.
    Upsert,
    /// The changed partitions since the watermark applied.
    Changes,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Replace => "replace",
            Mode::Upsert => "upsert",
            Mode::Changes => "changes",
        })
    }
}

/// One table to sync.
#[derive(Debug, Clone)]
pub struct TableSync {
    /// The published table (its name in the run pointer).
    pub source: String,
    /// The table's name in the schema.
    pub name: String,
    /// How it is kept in sync.
    pub mode: Mode,
    /// Primary key: the upsert's conflict target; for the others, a primary key added to the
    /// table (optional).
    pub key: Vec<String>,
}

/// What one table's sync did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    /// The table in the schema.
    pub table: String,
    /// The Delta version synced.
    pub version: u64,
    /// The state table had this version already: nothing was done.
    pub up_to_date: bool,
    /// Rows COPYed from the Delta table.
    pub copied: u64,
    /// Rows added to the table.
    pub inserted: u64,
    /// Rows whose values changed.
    pub updated: u64,
    /// Rows removed (gone keys; the old rows of changed partitions).
    pub deleted: u64,
    /// `changes`: the partitions applied (all of them on a first sync).
    pub partitions: Vec<String>,
}

/// The name of the state table.
pub const STATE: &str = "segflow_sync_state";

/// Creates the schema and the state table when they are not there. Only what is missing is
/// created: a role that may write the tables of an existing schema needs no CREATE privilege
/// on the database.
pub async fn prepare(client: &Client, target: &Target, schema: &str) -> Result<()> {
    let s = ident(schema);
    let what = || format!("preparing schema {schema}");
    let present = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
                    to_regclass($2) IS NOT NULL",
            &[&schema, &format!("{s}.{STATE}")],
        )
        .await
        .map_err(|e| target.error(what(), e))?;
    let (has_schema, has_state): (bool, bool) = (present.get(0), present.get(1));
    let mut sql = String::new();
    if !has_schema {
        sql.push_str(&format!("CREATE SCHEMA IF NOT EXISTS {s};"));
    }
    if !has_state {
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {s}.{STATE} (
               table_name text PRIMARY KEY,
               mode text NOT NULL,
               source_url text NOT NULL,
               delta_version bigint NOT NULL,
               run_id text NOT NULL,
               rows bigint NOT NULL,
               synced_at timestamptz NOT NULL
             );
             COMMENT ON TABLE {s}.{STATE} IS {};",
            literal(
                "segflow: the Delta version of each synced table (the watermark of `changes` \
                 mode), written in the transaction that synced it"
            )
        ));
    }
    if sql.is_empty() {
        return Ok(());
    }
    // Two first syncs at once can both try to create them: the loser's error is a unique
    // violation on the catalog, and they are there when it tries again.
    for attempt in 0..3 {
        match client.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < 2
                    && e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {}
            Err(e) => return Err(target.error(what(), e)),
        }
    }
    unreachable!("the loop returns")
}

/// Syncs one table at the version `published` names.
pub async fn sync_table(
    ctx: &SessionContext,
    client: &mut Client,
    target: &Target,
    schema: &str,
    published: &Published,
    spec: &TableSync,
) -> Result<Outcome> {
    let table = published.table(ctx, &spec.source).await?;
    let columns = schema::columns(table.rows.schema().as_arrow())?;
    for k in &spec.key {
        if !columns.iter().any(|c| &c.name == k) {
            return Err(ExportError::Mismatch(format!(
                "key column `{k}` of {} is not a column of the published {} (it has: {})",
                spec.name,
                spec.source,
                columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let qualified = format!("{}.{}", ident(schema), ident(&spec.name));
    let err = |what: &str| {
        let what = format!("{what} {schema}.{}", spec.name);
        move |e| target.error(what, e)
    };
    let tx = client
        .transaction()
        .await
        .map_err(err("beginning the sync of"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("segflow sync {schema}.{}", spec.name)],
    )
    .await
    .map_err(err("locking"))?;
    let state = tx
        .query_opt(
            &format!(
                "SELECT delta_version, source_url FROM {}.{STATE} WHERE table_name = $1",
                ident(schema)
            ),
            &[&spec.name],
        )
        .await
        .map_err(err("reading the sync state of"))?
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1)));
    let exists: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified])
        .await
        .map_err(err("looking up"))?
        .get(0);
    let url = table.url.to_string();
    let mut outcome = Outcome {
        table: spec.name.clone(),
        version: table.version,
        ..Outcome::default()
    };
    // The version this table holds, when it holds one of the same Delta table.
    let synced = state.filter(|(_, u)| *u == url && exists).map(|(v, _)| v);
    if synced == Some(table.version) {
        outcome.up_to_date = true;
        tx.commit().await.map_err(err("ending the sync of"))?;
        return Ok(outcome);
    }
    match spec.mode {
        Mode::Replace => {
            replace(
                &tx,
                target,
                schema,
                spec,
                &columns,
                table.rows,
                &mut outcome,
            )
            .await?
        }
        Mode::Upsert => {
            upsert(
                &tx,
                target,
                schema,
                spec,
                &columns,
                exists,
                table.rows,
                &mut outcome,
            )
            .await?
        }
        Mode::Changes => {
            let changed = match synced {
                Some(v) => table.changed_since(ctx, v).await,
                None => None,
            };
            changes(
                &tx,
                target,
                schema,
                spec,
                &columns,
                exists,
                &table,
                changed,
                &mut outcome,
            )
            .await?
        }
    }
    // Last before the commit: the watermark moves with the rows or not at all.
    tx.execute(
        &format!(
            "INSERT INTO {}.{STATE} AS s
               (table_name, mode, source_url, delta_version, run_id, rows, synced_at)
             VALUES ($1, $2, $3, $4, $5, $6, now())
             ON CONFLICT (table_name) DO UPDATE SET mode = EXCLUDED.mode,
               source_url = EXCLUDED.source_url, delta_version = EXCLUDED.delta_version,
               run_id = EXCLUDED.run_id, rows = EXCLUDED.rows, synced_at = EXCLUDED.synced_at",
            ident(schema)
        ),
        &[
            &spec.name,
            &spec.mode.to_string(),
            &url,
            &(table.version as i64),
            &table.run_id,
            &(outcome.copied as i64),
        ],
    )
    .await
    .map_err(err("recording the sync state of"))?;
    tx.commit().await.map_err(err("committing the sync of"))?;
    Ok(outcome)
}

async fn run(tx: &Transaction<'_>, target: &Target, sql: &str, what: &str) -> Result<u64> {
    tx.execute(sql, &[])
        .await
        .map_err(|e| target.error(what.to_string(), e))
}

async fn replace(
    tx: &Transaction<'_>,
    target: &Target,
    schema: &str,
    spec: &TableSync,
    columns: &[Column],
    rows: segflow_core::datafusion::prelude::DataFrame,
    outcome: &mut Outcome,
) -> Result<()> {
    let s = ident(schema);
    let name = &spec.name;
    let qualified = format!("{s}.{}", ident(name));
    let new_name = format!("{name}__segflow_new");
    let new = format!("{s}.{}", ident(&new_name));
    let what = format!("replacing {schema}.{name}");
    run(tx, target, &format!("DROP TABLE IF EXISTS {new}"), &what).await?;
    run(tx, target, &schema::create_table(&new, columns, &[]), &what).await?;
    outcome.copied = copy_rows(tx, target, &new, columns, rows).await?;
    if !spec.key.is_empty() {
        let keys: Vec<String> = spec.key.iter().map(|k| ident(k)).collect();
        run(
            tx,
            target,
            &format!(
                "ALTER TABLE {new} ADD CONSTRAINT {} PRIMARY KEY ({})",
                ident(&format!("{new_name}_pkey")),
                keys.join(", ")
            ),
            &format!("adding the primary key of {schema}.{name} (duplicate or null keys?)"),
        )
        .await?;
    }
    // What depends on the old table, to create again: views (deepest last), with their
    // comments, and the grants of the table and of each view.
    let old = tx
        .query_one("SELECT to_regclass($1)::oid", &[&qualified])
        .await
        .map_err(|e| target.error(what.clone(), e))?
        .get::<_, Option<u32>>(0);
    let mut recreate: Vec<String> = Vec::new();
    if let Some(oid) = old {
        recreate.extend(grants(tx, target, oid, &qualified, &what).await?);
        let views = tx
            .query(
                "WITH RECURSIVE deps(oid, depth) AS (
                   SELECT r.ev_class, 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                    WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1 AND r.ev_class <> $1
                   UNION
                   SELECT r.ev_class, deps.depth + 1 FROM deps
                     JOIN pg_depend d ON d.refobjid = deps.oid
                     JOIN pg_rewrite r ON r.oid = d.objid
                    WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class <> deps.oid
                 )
                 SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                        c.relkind::text, pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class')
                   FROM deps JOIN pg_class c ON c.oid = deps.oid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  GROUP BY c.oid, n.nspname, c.relname, c.relkind
                  ORDER BY max(deps.depth), c.oid",
                &[&oid],
            )
            .await
            .map_err(|e| target.error(format!("listing the views on {schema}.{name}"), e))?;
        for v in views {
            let (view_oid, view, kind, def, comment): (
                u32,
                String,
                String,
                String,
                Option<String>,
            ) = (v.get(0), v.get(1), v.get(2), v.get(3), v.get(4));
            let (create, object) = if kind == "m" {
                ("CREATE MATERIALIZED VIEW", "MATERIALIZED VIEW")
            } else {
                ("CREATE VIEW", "VIEW")
            };
            recreate.push(format!("{create} {view} AS {}", def.trim_end_matches(';')));
            if let Some(c) = comment {
                recreate.push(format!("COMMENT ON {object} {view} IS {}", literal(&c)));
            }
            recreate.extend(grants(tx, target, view_oid, &view, &what).await?);
        }
    }
    run(
        tx,
        target,
        &format!("DROP TABLE IF EXISTS {qualified} CASCADE"),
        &what,
    )
    .await?;
    run(
        tx,
        target,
        &format!("ALTER TABLE {new} RENAME TO {}", ident(name)),
        &what,
    )
    .await?;
    if !spec.key.is_empty() {
        run(
            tx,
            target,
            &format!(
                "ALTER TABLE {qualified} RENAME CONSTRAINT {} TO {}",
                ident(&format!("{new_name}_pkey")),
                ident(&format!("{name}_pkey"))
            ),
            &what,
        )
        .await?;
    }
    for sql in schema::comments(&qualified, &spec.source, columns) {
        run(tx, target, &sql, &what).await?;
    }
    for sql in recreate {
        run(
            tx,
            target,
            &sql,
            &format!("recreating what depended on {schema}.{name}"),
        )
        .await?;
    }
    Ok(())
}

/// `GRANT` statements that give `object` (quoted) the privileges the relation `oid` grants to
/// roles other than its owner.
async fn grants(
    tx: &Transaction<'_>,
    target: &Target,
    oid: u32,
    object: &str,
    what: &str,
) -> Result<Vec<String>> {
    let rows = tx
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                    a.privilege_type, a.is_grantable
               FROM pg_class c, aclexplode(c.relacl) a
              WHERE c.oid = $1 AND a.grantee <> c.relowner",
            &[&oid],
        )
        .await
        .map_err(|e| target.error(what.to_string(), e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (grantee, privilege, grantable): (String, String, bool) =
                (r.get(0), r.get(1), r.get(2));
            let option = if grantable { " WITH GRANT OPTION" } else { "" };
            format!("GRANT {privilege} ON {object} TO {grantee}{option}")
        })
        .collect())
}

/// Creates the table, or adds the columns it lacks; a column with another type is refused.
async fn ensure_table(
    tx: &Transaction<'_>,
    target: &Target,
    schema: &str,
    spec: &TableSync,
    columns: &[Column],
    exists: bool,
) -> Result<()> {
    let qualified = format!("{}.{}", ident(schema), ident(&spec.name));
    let what = format!("creating {schema}.{}", spec.name);
    if !exists {
        run(
            tx,
            target,
            &schema::create_table(&qualified, columns, &spec.key),
            &what,
        )
        .await?;
        for sql in schema::comments(&qualified, &spec.source, columns) {
            run(tx, target, &sql, &what).await?;
        }
        return Ok(());
    }
    let have: Vec<(String, String)> = tx
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&qualified],
        )
        .await
        .map_err(|e| target.error(format!("reading the columns of {schema}.{}", spec.name), e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let comments = schema::comments(&qualified, &spec.source, columns);
    for c in columns {
        match have.iter().find(|(n, _)| *n == c.name) {
            Some((_, t)) if *t == c.pg_type => {}
            Some((_, t)) => {
                return Err(ExportError::Mismatch(format!(
                    "{schema}.{} has column {} of type {t}, and the published {} has it as {}; \
                     drop the table (the next sync creates it) or alter the column",
                    spec.name, c.name, spec.source, c.pg_type
                )));
            }
            None => {
                // Output contract columns are only ever added: add them here too.
                run(
                    tx,
                    target,
                    &format!(
                        "ALTER TABLE {qualified} ADD COLUMN {} {}",
                        ident(&c.name),
                        c.pg_type
                    ),
                    &format!("adding column {} to {schema}.{}", c.name, spec.name),
                )
                .await?;
                let prefix = format!("COMMENT ON COLUMN {qualified}.{} ", ident(&c.name));
                for sql in comments.iter().filter(|s| s.starts_with(&prefix)) {
                    run(tx, target, sql, &what).await?;
                }
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn upsert(
    tx: &Transaction<'_>,
    target: &Target,
    schema: &str,
    spec: &TableSync,
    columns: &[Column],
    exists: bool,
    rows: segflow_core::datafusion::prelude::DataFrame,
    outcome: &mut Outcome,
) -> Result<()> {
    ensure_table(tx, target, schema, spec, columns, exists).await?;
    let qualified = format!("{}.{}", ident(schema), ident(&spec.name));
    let what = format!("upserting into {schema}.{}", spec.name);
    // An empty table (a first sync) takes the rows straight: nothing to match them with.
    let empty: bool = tx
        .query_one(
            &format!("SELECT NOT EXISTS (SELECT 1 FROM {qualified})"),
            &[],
        )
        .await
        .map_err(|e| target.error(what.clone(), e))?
        .get(0);
    if empty {
        outcome.copied = copy_rows(tx, target, &qualified, columns, rows).await?;
        outcome.inserted = outcome.copied;
        return Ok(());
    }
    let stage = ident(&format!("segflow_stage_{}", spec.name));
    run(
        tx,
        target,
        &format!(
            "{} ON COMMIT DROP",
            schema::create_table(&format!("pg_temp.{stage}"), columns, &[]).replacen(
                "CREATE TABLE",
                "CREATE TEMPORARY TABLE",
                1
            )
        ),
        &what,
    )
    .await?;
    outcome.copied = copy_rows(tx, target, &format!("pg_temp.{stage}"), columns, rows).await?;
    run(tx, target, &format!("ANALYZE pg_temp.{stage}"), &what).await?;
    let names: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
    let keys: Vec<String> = spec.key.iter().map(|k| ident(k)).collect();
    let values: Vec<&String> = columns
        .iter()
        .filter(|c| !spec.key.contains(&c.name))
        .map(|c| &c.name)
        .collect();
    let action = if values.is_empty() {
        "DO NOTHING".to_string()
    } else {
        let set: Vec<String> = values
            .iter()
            .map(|v| format!("{0} = EXCLUDED.{0}", ident(v)))
            .collect();
        let mine: Vec<String> = values.iter().map(|v| format!("t.{}", ident(v))).collect();
        let theirs: Vec<String> = values
            .iter()
            .map(|v| format!("EXCLUDED.{}", ident(v)))
            .collect();
        // Only rows whose values differ are written: a rerun rewrites nothing.
        format!(
            "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
            set.join(", "),
            mine.join(", "),
            theirs.join(", ")
        )
    };
    let counts = tx
        .query_one(
            &format!(
                "WITH up AS (
                   INSERT INTO {qualified} AS t ({cols}) SELECT {cols} FROM pg_temp.{stage}
                   ON CONFLICT ({keys}) {action}
                   RETURNING (xmax = 0) AS inserted
                 )
                 SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up",
                cols = names.join(", "),
                keys = keys.join(", "),
            ),
            &[],
        )
        .await
        .map_err(|e| target.error(what.clone(), e))?;
    outcome.inserted = counts.get::<_, i64>(0) as u64;
    outcome.updated = counts.get::<_, i64>(1) as u64;
    let matches: Vec<String> = spec
        .key
        .iter()
        .map(|k| format!("s.{0} = t.{0}", ident(k)))
        .collect();
    outcome.deleted = run(
        tx,
        target,
        &format!(
            "DELETE FROM {qualified} t WHERE NOT EXISTS (SELECT 1 FROM pg_temp.{stage} s WHERE {})",
            matches.join(" AND ")
        ),
        &what,
    )
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn changes(
    tx: &Transaction<'_>,
    target: &Target,
    schema: &str,
    spec: &TableSync,
    columns: &[Column],
    exists: bool,
    table: &published::Table,
    changed: Option<BTreeSet<Option<String>>>,
    outcome: &mut Outcome,
) -> Result<()> {
    ensure_table(tx, target, schema, spec, columns, exists).await?;
    let qualified = format!("{}.{}", ident(schema), ident(&spec.name));
    let what = format!("applying changes to {schema}.{}", spec.name);
    let rows = match (&changed, table.partition_by.first()) {
        (Some(values), Some(column)) => {
            let pg_type = &columns
                .iter()
                .find(|c| &c.name == column)
                .ok_or_else(|| {
                    ExportError::Mismatch(format!("partition column {column} is not a column"))
                })?
                .pg_type;
            let present: Vec<String> = values.iter().flatten().cloned().collect();
            let with_null = values.contains(&None);
            outcome.deleted = tx
                .execute(
                    &format!(
                        "DELETE FROM {qualified} WHERE {c} = ANY($1::text[]::{pg_type}[]){null}",
                        c = ident(column),
                        null = if with_null {
                            format!(" OR {} IS NULL", ident(column))
                        } else {
                            String::new()
                        }
                    ),
                    &[&present],
                )
                .await
                .map_err(|e| target.error(what.clone(), e))?;
            outcome.partitions = values
                .iter()
                .map(|v| v.clone().unwrap_or_else(|| "(null)".into()))
                .collect();
            table.partition_rows(values).map_err(|e| {
                ExportError::Core(segflow_core::Error::DataFusion {
                    stage: "export".into(),
                    context: format!("selecting the changed partitions of {}", spec.source),
                    source: e,
                })
            })?
        }
        _ => {
            // A first sync, or a table without one partition column: everything.
            outcome.deleted = run(tx, target, &format!("DELETE FROM {qualified}"), &what).await?;
            let mut all: BTreeSet<String> = BTreeSet::new();
            for (_, values) in &table.files {
                all.insert(
                    values
                        .first()
                        .cloned()
                        .flatten()
                        .unwrap_or_else(|| "(null)".into()),
                );
            }
            outcome.partitions = all.into_iter().collect();
            table.rows.clone()
        }
    };
    outcome.copied = copy_rows(tx, target, &qualified, columns, rows).await?;
    outcome.inserted = outcome.copied;
    Ok(())
}
