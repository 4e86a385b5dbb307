//! The report page: one HTML file with its CSS, script and charts inline (nothing is fetched,
//! so it opens from a disk or a bucket with no network), a data table behind every chart in a
//! `<details>`, readable without the script, and a print stylesheet.
//!
//! Machine-readable hooks for tests and scrapers: every chart is a `figure.chart[data-chart]`,
//! every table `table[data-table]`, and every number a `td[data-col][data-value]` holding the
//! table's value as stored (the cell's text is the formatted one).

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::charts;
use super::data::{Cell, ReportData, Rows};

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("script.js");

/// `1234567` as `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A share as a percentage with one decimal.
fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// A money amount with two decimals and thousands separators.
fn money(v: f64) -> String {
    let cents = (v * 100.0).round() as i64;
    format!("{}.{:02}", thousands(cents / 100), (cents % 100).abs())
}

/// How a column's value is shown: by its name and type.
fn shown(column: &str, cell: &Cell) -> String {
    match cell {
        Cell::Null => "–".into(),
        Cell::Int(i) => thousands(*i),
        Cell::Decimal(_, f) => money(*f),
        Cell::Float(f)
            if column.ends_with("share")
                || column.ends_with("rate")
                || column.ends_with("_90d") =>
        {
            pct(*f)
        }
        Cell::Float(f)
            if column == "lift" || column.starts_with("mean_p_alive") || column == "silhouette" =>
        {
            format!("{f:.3}")
        }
        Cell::Float(f) if f.abs() >= 1000.0 => money(*f),
        Cell::Float(f) => format!("{f:.2}"),
        Cell::Text(s) => s.clone(),
        Cell::Bool(b) => {
            if *b {
                "yes".into()
            } else {
                "no".into()
            }
        }
    }
}

/// `text` escaped for an HTML attribute value in double quotes.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Lowercase letters, digits and `-`: for ids and `data-chart` names.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// A table of `rows`' columns `columns` (all when empty), with hooks; `key` columns go on the
/// row as `data-<column>`.
fn table(name: &str, rows: &Rows, columns: &[&str], key: &[&str]) -> Markup {
    let columns: Vec<String> = if columns.is_empty() {
        rows.columns.clone()
    } else {
        columns
            .iter()
            .filter(|c| rows.col(c).is_some())
            .map(|c| c.to_string())
            .collect()
    };
    html! {
        div.scroll {
            table data-table=(name) {
                thead { tr { @for c in &columns { th scope="col" { (c) } } } }
                tbody {
                    @for r in 0..rows.rows.len() {
                        tr data-key=(key.iter().map(|k| rows.get(r, k).raw()).collect::<Vec<_>>().join("|")) {
                            @for c in &columns {
                                @let cell = rows.get(r, c);
                                @if cell.num().is_some() {
                                    td.num data-col=(c) data-value=(cell.raw()) { (shown(c, cell)) }
                                } @else {
                                    td data-col=(c) data-value=(cell.raw()) { (shown(c, cell)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A chart with its caption and its data table in a `<details>`.
fn figure(id: &str, title: &str, svg: Result<String, String>, data: Markup) -> Markup {
    html! {
        figure.chart data-chart=(id) id=(format!("chart-{id}")) {
            figcaption { (title) }
            @match svg {
                // The picture's name for screen readers is the caption; its numbers are in the
                // table under it.
                Ok(svg) => div.plot { (PreEscaped(svg.replacen("role=\"img\"", &format!("role=\"img\" aria-label=\"{}\"", attribute(title)), 1))) },
                Err(e) => p.error { "The chart could not be drawn: " (e) },
            }
            details {
                summary { "Data" }
                (data)
            }
        }
    }
}

/// The whole page.
pub fn render(d: &ReportData) -> String {
    let title = format!("Customer segments: {}", d.run.pipeline);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="generator" content=(concat!("segflow ", env!("CARGO_PKG_VERSION")));
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { (title) }
                    (run_header(d))
                }
                nav aria-label="Sections" {
                    ul {
                        @for s in &d.segmentations { li { a href=(format!("#seg-{}", slug(s))) { (s) } } }
                        li { a href="#rfm-grid" { "RFM grid" } }
                        li { a href="#movement" { "Movement" } }
                        li { a href="#clusters" { "Clusters" } }
                        li { a href="#campaigns" { "Campaigns" } }
                        li { a href="#clv" { "CLV" } }
                    }
                }
                main {
                    @for s in &d.segmentations { (segmentation(d, s)) }
                    (rfm_grid(d))
                    (movement(d))
                    (clusters(d))
                    (campaigns(d))
                    (clv(d))
                }
                footer {
                    p { "Made by segflow from the published tables; every number is the tables' own (see each chart's Data)." }
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    };
    page.into_string()
}

fn run_header(d: &ReportData) -> Markup {
    let quarantined: i64 = d
        .quarantine
        .as_ref()
        .map(|q| {
            (0..q.rows.len())
                .filter_map(|r| q.get(r, "rows").num())
                .sum::<f64>() as i64
        })
        .unwrap_or(0);
    html! {
        dl.run data-table="run" {
            div { dt { "Run" } dd data-col="run_id" data-value=(d.run.run_id.clone().unwrap_or_default()) {
                (d.run.run_id.clone().unwrap_or_else(|| "not recorded: tables at their latest versions".into())) } }
            div { dt { "As of" } dd data-col="as_of" data-value=(d.run.as_of.clone().unwrap_or_default()) { (d.run.as_of.clone().unwrap_or_else(|| "–".into())) } }
            div { dt { "Published" } dd data-col="published_at" { (d.run.published_at.clone().unwrap_or_else(|| "–".into())) } }
            div { dt { "Pipeline" } dd data-col="pipeline" { (d.run.pipeline) } }
        }
        div.kpis {
            div.kpi { span.label { "Customers" } span.value data-col="customers" data-value=(d.customers.raw()) { (shown("customers", &d.customers)) } }
            div.kpi { span.label { "Revenue" } span.value data-col="revenue" data-value=(d.revenue.raw()) { (shown("revenue", &d.revenue)) } }
            div.kpi { span.label { "Rows quarantined" } span.value data-col="quarantined" data-value=(quarantined) { (thousands(quarantined)) } }
        }
        @if let Some(q) = &d.quarantine {
            @if q.rows.is_empty() {
                p.note { "No input row was quarantined by this run's ingest." }
            } @else {
                details.quarantine {
                    summary { "Quarantined rows by reason (this run's ingest; the rows are in the quarantine table)" }
                    (table("quarantine", q, &[], &["table_name", "reason"]))
                }
            }
        }
    }
}

fn segmentation(d: &ReportData, s: &str) -> Markup {
    let segments = d.segments(s);
    let p = d.profiles.filter("segmentation", s);
    let value = |seg: &str, col: &str| p.num_where("segment", seg, col).unwrap_or(0.0);
    let sizes = charts::bars(
        &segments,
        &[
            (
                "share of customers",
                segments
                    .iter()
                    .map(|x| value(x, "customer_share"))
                    .collect(),
            ),
            (
                "share of revenue",
                segments.iter().map(|x| value(x, "revenue_share")).collect(),
            ),
        ],
        &|v| format!("{:.0}%", v * 100.0),
    );
    let catalog = d
        .catalog
        .as_ref()
        .map(|c| c.filter("segmentation", s))
        .filter(|c| !c.rows.is_empty());
    html! {
        section.segmentation id=(format!("seg-{}", slug(s))) data-segmentation=(s) {
            h2 { "Segmentation: " (s) }
            (figure(&format!("sizes-{}", slug(s)), &format!("{s}: share of customers and of revenue per segment"), sizes,
                table(&format!("sizes-{s}"), &p, &["segment", "customers", "customer_share", "revenue", "revenue_share"], &["segmentation", "segment"])))
            @if let Some(c) = &catalog {
                h3 { "What each segment is, and what to do" }
                div.scroll {
                    table data-table=(format!("catalog-{s}")) {
                        thead { tr { th { "Segment" } th { "Description" } th { "Strategy" } th { "Rule" } th { "Customers" } } }
                        tbody {
                            @for r in 0..c.rows.len() {
                                tr data-key=(format!("{s}|{}", c.get(r, "segment").raw())) {
                                    td data-col="segment" { (c.get(r, "segment").raw()) }
                                    td data-col="description" { (c.get(r, "description").text().unwrap_or_else(|| "–".into())) }
                                    td data-col="strategy" { (c.get(r, "strategy").text().unwrap_or_else(|| "–".into())) }
                                    td data-col="rule" { code { (c.get(r, "rule").text().unwrap_or_else(|| "(default: every other customer)".into())) } }
                                    td.num data-col="customers" data-value=(c.get(r, "customers").raw()) { (shown("customers", c.get(r, "customers"))) }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "Profiles" }
            (table(&format!("profiles-{s}"), &p, &[], &["segmentation", "segment"]))
        }
    }
}

fn rfm_grid(d: &ReportData) -> Markup {
    let g = &d.rfm_grid;
    let scores: Vec<String> = (1..=5).map(|i| i.to_string()).collect();
    let rows: Vec<String> = scores.iter().rev().cloned().collect();
    let mut values = vec![vec![0.0; 5]; 5];
    let mut text = vec![vec![String::new(); 5]; 5];
    for r in 0..g.rows.len() {
        let (Some(rs), Some(fs), Some(n)) = (
            g.get(r, "r_score").num(),
            g.get(r, "f_score").num(),
            g.get(r, "customers").num(),
        ) else {
            continue;
        };
        let (row, col) = (5 - rs as usize, fs as usize - 1);
        if row < 5 && col < 5 {
            values[row][col] += n;
            let seg = g.get(r, "rfm_segment").text().unwrap_or_default();
            text[row][col] = format!("{seg}\n{}", thousands(values[row][col] as i64));
        }
    }
    let svg = charts::heatmap(
        &scores,
        &rows,
        &values,
        &text,
        "f_score (frequency)",
        "r_score (recency)",
    );
    html! {
        section id="rfm-grid" {
            h2 { "RFM grid" }
            p { "Customers with a counted order by recency score (rows, 5 = most recent) and frequency score (columns, 5 = most frequent), with the RFM segment of each cell." }
            (figure("rfm-grid", "Customers per (r_score, f_score)", svg, table("rfm-grid", g, &[], &["r_score", "f_score"])))
        }
    }
}

fn movement(d: &ReportData) -> Markup {
    html! {
        section id="movement" {
            h2 { "Movement" }
            @match (&d.migrations, &d.history) {
                (Some(m), Some(h)) => {
                    @let from = (0..m.rows.len()).find_map(|r| m.get(r, "from_as_of").text());
                    p { @match &from {
                        Some(f) => { "Where this snapshot's customers were in the previous one (" (f) "); " code { "new" } " = not in it." }
                        None => { "There is no earlier snapshot: every customer is " code { "new" } ". The matrix fills from the next run on." }
                    } }
                    @for s in &d.segmentations {
                        @let ms = m.filter("segmentation", s);
                        @if !ms.rows.is_empty() {
                            (migration_matrix(d, s, &ms))
                        }
                    }
                    h3 { "Segment sizes over the history" }
                    @for s in &d.segmentations {
                        @let hs = h.filter("segmentation", s);
                        @if !hs.rows.is_empty() {
                            (history_lines(s, &hs))
                        }
                    }
                }
                _ => { p.note { "segment_migrations is not published by this pipeline." } }
            }
        }
    }
}

fn migration_matrix(d: &ReportData, s: &str, m: &Rows) -> Markup {
    let order = d.segments(s);
    let mut to: Vec<String> = order.clone();
    let mut from: Vec<String> = vec!["new".to_string()];
    from.extend(order.iter().cloned());
    for r in 0..m.rows.len() {
        for (list, col) in [(&mut from, "from_segment"), (&mut to, "to_segment")] {
            if let Some(v) = m.get(r, col).text()
                && !list.contains(&v)
            {
                list.push(v);
            }
        }
    }
    // Only the rows and columns someone is in.
    let used = |list: &[String], col: &str| -> Vec<String> {
        list.iter()
            .filter(|x| (0..m.rows.len()).any(|r| m.get(r, col).text().as_deref() == Some(x)))
            .cloned()
            .collect()
    };
    let (from, to) = (used(&from, "from_segment"), used(&to, "to_segment"));
    let mut values = vec![vec![0.0; to.len()]; from.len()];
    let mut text = vec![vec![String::new(); to.len()]; from.len()];
    for r in 0..m.rows.len() {
        let f = from
            .iter()
            .position(|x| Some(x.as_str()) == m.get(r, "from_segment").text().as_deref());
        let t = to
            .iter()
            .position(|x| Some(x.as_str()) == m.get(r, "to_segment").text().as_deref());
        if let (Some(f), Some(t), Some(n)) = (f, t, m.get(r, "customers").num()) {
            values[f][t] = n;
            text[f][t] = thousands(n as i64);
        }
    }
    let svg = charts::heatmap(
        &to,
        &from,
        &values,
        &text,
        "this snapshot",
        "previous snapshot",
    );
    figure(
        &format!("migrations-{}", slug(s)),
        &format!("{s}: customers from (rows) to (columns)"),
        svg,
        table(
            &format!("migrations-{s}"),
            m,
            &["from_segment", "to_segment", "customers"],
            &["segmentation", "from_segment", "to_segment"],
        ),
    )
}

fn history_lines(s: &str, h: &Rows) -> Markup {
    let mut days: Vec<String> = (0..h.rows.len())
        .filter_map(|r| h.get(r, "as_of").text())
        .collect();
    days.sort();
    days.dedup();
    let mut segments: Vec<(String, f64)> = Vec::new();
    for r in 0..h.rows.len() {
        let seg = h.get(r, "segment").text().unwrap_or_default();
        let n = h.get(r, "customers").num().unwrap_or(0.0);
        match segments.iter_mut().find(|x| x.0 == seg) {
            Some(x) => x.1 += n,
            None => segments.push((seg, n)),
        }
    }
    segments.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let series: Vec<(String, Vec<Option<f64>>)> = segments
        .iter()
        .map(|(seg, _)| {
            let v = days
                .iter()
                .map(|day| {
                    (0..h.rows.len())
                        .find_map(|r| {
                            (h.get(r, "as_of").text().as_deref() == Some(day)
                                && h.get(r, "segment").text().as_deref() == Some(seg))
                            .then(|| h.get(r, "customers").num())
                            .flatten()
                        })
                        .or(Some(0.0))
                })
                .collect();
            (seg.clone(), v)
        })
        .collect();
    let svg = charts::lines(&days, &series, &|v| thousands(v.round() as i64), None);
    figure(
        &format!("history-{}", slug(s)),
        &format!("{s}: customers per segment at each as_of"),
        svg,
        table(
            &format!("history-{s}"),
            h,
            &["as_of", "segment", "customers"],
            &["segmentation", "as_of", "segment"],
        ),
    )
}

fn clusters(d: &ReportData) -> Markup {
    html! {
        section id="clusters" {
            h2 { "Clusters" }
            @match &d.cluster_scores {
                Some(sc) if !sc.rows.is_empty() => {
                    @let ks: Vec<String> = (0..sc.rows.len()).map(|r| sc.get(r, "k").raw()).collect();
                    @let chosen = (0..sc.rows.len()).find(|r| sc.get(*r, "chosen") == &Cell::Bool(true));
                    @let col = |c: &str| (0..sc.rows.len()).map(|r| sc.get(r, c).num()).collect::<Vec<_>>();
                    p { "k-means tried k = " (ks.join(", ")) "; the k with the best silhouette was kept"
                        @if let Some(c) = chosen { " (k = " (ks[c]) ", circled)" } "." }
                    div.pair {
                        (figure("elbow", "Inertia (within-cluster sum of squares) per k", charts::lines(&ks, &[("inertia".into(), col("inertia"))], &|v| format!("{v:.0}"), chosen),
                            table("cluster-scores", sc, &[], &["k"])))
                        (figure("silhouette", "Mean silhouette per k (higher is better)", charts::lines(&ks, &[("silhouette".into(), col("silhouette"))], &|v| format!("{v:.2}"), chosen),
                            table("cluster-silhouette", sc, &["k", "silhouette", "chosen"], &["k"])))
                    }
                    @if let Some(c) = &d.cluster_centers {
                        h3 { "Cluster centers, in original units" }
                        (table("cluster-centers", c, &[], &["cluster_id"]))
                    }
                }
                _ => { p.note { "No clusters are published by this pipeline." } }
            }
        }
    }
}

fn campaigns(d: &ReportData) -> Markup {
    let seg = &d.campaign_segmentation;
    let Some(c) = d.campaigns.as_ref().filter(|_| !d.top_campaigns.is_empty()) else {
        return html! {
            section id="campaigns" {
                h2 { "Campaigns" }
                p.note { "No campaign activity is published by this pipeline." }
            }
        };
    };
    let at = |r: usize, col: &str| c.get(r, col).text();
    let segments: Vec<String> = d
        .segments(seg)
        .into_iter()
        .filter(|s| (0..c.rows.len()).any(|r| at(r, "segment").as_deref() == Some(s)))
        .collect();
    let mut values = vec![vec![0.0; d.top_campaigns.len()]; segments.len()];
    let mut text = vec![vec![String::new(); d.top_campaigns.len()]; segments.len()];
    for r in 0..c.rows.len() {
        let s = segments
            .iter()
            .position(|x| Some(x) == at(r, "segment").as_ref());
        let k = d
            .top_campaigns
            .iter()
            .position(|x| Some(x) == at(r, "campaign_id").as_ref());
        if let (Some(s), Some(k)) = (s, k) {
            let rate = c.get(r, "conversion_rate").num();
            values[s][k] = rate.unwrap_or(0.0);
            text[s][k] = match (rate, c.get(r, "lift").num()) {
                (Some(x), Some(l)) => format!("{}\nlift {l:.2}", pct(x)),
                (Some(x), None) => pct(x),
                _ => "–".into(),
            };
        }
    }
    let svg = charts::heatmap(
        &d.top_campaigns,
        &segments,
        &values,
        &text,
        "campaign",
        &format!("{seg} segment"),
    );
    html! {
        section id="campaigns" {
            h2 { "Campaigns" }
            p { "Conversion rate (customers with an attributed order over customers sent the campaign) and lift (over the campaign's overall rate) per " (seg) " segment, for the " (d.top_campaigns.len()) " campaigns with the most sends. An order counts for its campaign whether or not its customer was sent it, so a rate can pass 100%." }
            (figure("campaigns", &format!("Conversion rate and lift by {seg} segment"), svg,
                table("campaigns", c, &[], &["campaign_id", "segment"])))
        }
    }
}

fn clv(d: &ReportData) -> Markup {
    html! {
        section id="clv" {
            h2 { "Customer lifetime value" }
            @match &d.p_alive {
                Some(pa) => {
                    @let seg = "rfm";
                    @let segments = d.segments(seg);
                    @let p = d.profiles.filter("segmentation", seg);
                    @let value = |s: &str| p.num_where("segment", s, "mean_predicted_clv").unwrap_or(0.0);
                    (figure("clv-per-segment", "Mean predicted CLV per rfm segment", charts::bars(&segments, &[("mean predicted CLV", segments.iter().map(|s| value(s)).collect())], &|v| format!("{v:.0}")),
                        table("clv-per-segment", &p, &["segment", "customers", "mean_predicted_clv", "mean_p_alive"], &["segmentation", "segment"])))
                    @let bins: Vec<String> = (0..10).map(|b| format!("{:.1}–{:.1}", b as f64 / 10.0, (b + 1) as f64 / 10.0)).collect();
                    @let counts: Vec<f64> = (0..10).map(|b| pa.num_where("bin", &b.to_string(), "customers").unwrap_or(0.0)).collect();
                    (figure("p-alive", "Customers by p_alive (probability of still being active)", charts::bars(&bins, &[("customers", counts)], &|v| thousands(v.round() as i64)),
                        table("p-alive", pa, &[], &["bin"])))
                }
                None => { p.note { "No CLV predictions are published by this pipeline." } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_for_people() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(money(1234.5), "1,234.50");
        assert_eq!(shown("customer_share", &Cell::Float(0.1234)), "12.3%");
        assert_eq!(
            shown("revenue", &Cell::Decimal("90.50".into(), 90.5)),
            "90.50"
        );
        assert_eq!(shown("customers", &Cell::Null), "–");
        assert_eq!(slug("rfm segment"), "rfm-segment");
        assert_eq!(
            attribute("a \"b\" & <c>"),
            "a &quot;b&quot; &amp; &lt;c&gt;"
        );
    }
}
