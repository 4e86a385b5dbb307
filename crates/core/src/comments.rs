//! Table and column comments from the output contract (docs/output-contract.md), for BI
//! tools' descriptions (the Flight SQL server's REMARKS, a warehouse's COMMENT ON): the
//! contract is the one place a column's meaning is written, so readers take it from there
//! rather than keep a second copy that would drift.
//!
//! A table's section starts with a line `**`name`**: what a row is`; its columns are the rows
//! of a markdown table (`| a, b | type | meaning |`) or, in prose, `` `column` (meaning) ``.

use std::collections::HashMap;

const CONTRACT: &str = include_str!("../../../docs/output-contract.md");

/// Tables whose columns are another table's, as the contract says ("every run also writes its
/// customer_segments into segment_history").
const SAME_COLUMNS_AS: &[(&str, &str)] = &[("segment_history", "customer_segments")];

/// Table -> column -> comment, and table -> what a row is.
#[derive(Debug, Default)]
pub struct Comments {
    columns: HashMap<String, HashMap<String, String>>,
    tables: HashMap<String, String>,
}

impl Comments {
    /// The comments of segflow's output contract.
    pub fn contract() -> Comments {
        Comments::parse(CONTRACT)
    }

    pub fn parse(text: &str) -> Comments {
        let mut all: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut tables = HashMap::new();
        let mut table: Option<String> = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = heading(line) {
                if let Some(n) = &name
                    && let Some(about) = about(line)
                {
                    tables.entry(n.clone()).or_insert(about);
                }
                table = name;
            } else if line.starts_with("## ") {
                table = None;
            }
            let Some(t) = &table else { continue };
            let columns = all.entry(t.clone()).or_default();
            if line.starts_with('|') {
                let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
                if cells.len() < 3 || cells[0] == "column" || cells[0].starts_with("---") {
                    continue;
                }
                let meaning = clean(cells[2]);
                for name in cells[0].split(',').map(str::trim).filter(|n| is_name(n)) {
                    columns.insert(name.to_string(), meaning.clone());
                }
            } else {
                for (name, meaning) in inline(line) {
                    columns.entry(name).or_insert(meaning);
                }
            }
        }
        for (table, source) in SAME_COLUMNS_AS {
            if let Some(columns) = all.get(*source).cloned() {
                let target = all.entry(table.to_string()).or_default();
                for (c, m) in columns {
                    target.entry(c).or_insert(m);
                }
            }
        }
        all.retain(|_, c| !c.is_empty());
        Comments {
            columns: all,
            tables,
        }
    }

    /// A column's meaning.
    pub fn get(&self, table: &str, column: &str) -> Option<&str> {
        self.columns.get(table)?.get(column).map(String::as_str)
    }

    /// What a row of the table is (the start of its section: "one row per customer in
    /// customers.csv").
    pub fn table(&self, table: &str) -> Option<&str> {
        self.tables.get(table).map(String::as_str)
    }
}

/// `Some(Some(name))` on a section heading of a table, `Some(None)` on one of something else
/// (`staging/<table>`, `_runs/...`).
fn heading(line: &str) -> Option<Option<String>> {
    let rest = line.strip_prefix("**`")?;
    let (name, _) = rest.split_once("`**")?;
    Some(is_name(name).then(|| name.to_string()))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The heading line's text after the name, to the end of its first sentence or clause.
fn about(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("`**")?;
    let rest = rest.trim_start_matches([':', ' ']);
    let end = [". ", ": "]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
        .unwrap_or(rest.len());
    let text = clean(rest[..end].trim_end_matches(['.', ':']));
    (!text.is_empty()).then_some(text)
}

/// Markdown out of a comment: tools show it as plain text.
fn clean(s: &str) -> String {
    s.replace('`', "").replace("**", "").trim().to_string()
}

/// `` `column` (meaning) `` pairs of a line of prose, the meaning's nested parentheses kept.
fn inline(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else { break };
        let name = &after[..end];
        let tail = &after[end + 1..];
        rest = tail;
        let Some(body) = tail.strip_prefix(" (") else {
            continue;
        };
        if !is_name(name) {
            continue;
        }
        let mut depth = 1;
        let mut close = None;
        for (i, c) in body.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        // A meaning that goes on to the next line is cut at the line's end.
        let meaning = &body[..close.unwrap_or(body.len())];
        out.push((name.to_string(), clean(meaning)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_gives_table_and_prose_columns_their_meaning() {
        let c = Comments::contract();
        assert!(
            c.get("customer_segments", "rfm_segment")
                .unwrap()
                .contains("champions")
        );
        assert!(
            c.get("customer_segments", "m_score")
                .unwrap()
                .contains("1..5")
        );
        assert!(
            c.get("customer_clv", "as_of")
                .unwrap()
                .contains("customer_segments")
        );
        assert!(
            c.get("segment_history", "cluster_id")
                .unwrap()
                .contains("k-means")
        );
        assert!(c.get("clv_model", "model").unwrap().contains("bgnbd"));
        assert!(
            c.get("cluster_scores", "inertia")
                .unwrap()
                .contains("sum of squares")
        );
        assert!(
            !c.get("customer_segments", "rfm_segment")
                .unwrap()
                .contains('`')
        );
        assert_eq!(c.get("customer_segments", "no_such_column"), None);
        assert_eq!(c.get("no_such_table", "customer_id"), None);
        assert_eq!(
            c.table("customer_segments"),
            Some("one row per customer in customers.csv")
        );
        assert!(
            c.table("campaign_performance")
                .unwrap()
                .starts_with("one row per campaign x segmentation x segment")
        );
    }

    #[test]
    fn every_customer_segments_column_of_the_contract_table_has_a_comment() {
        for col in [
            "customer_id",
            "as_of",
            "recency_days",
            "frequency",
            "monetary",
            "r_score",
            "f_score",
            "demographic_segment",
            "geographic_segment",
            "psychographic_segment",
            "engagement_segment",
            "cluster_label",
            "p_alive",
            "predicted_clv",
            "clv_segment",
        ] {
            assert!(
                Comments::contract().get("customer_segments", col).is_some(),
                "{col}"
            );
        }
    }

    #[test]
    fn prose_meanings_keep_nested_parentheses_and_skip_non_columns() {
        let got = inline("a `k` (int (at least 2)), `x`, and `staging/<t>` (no) `y` (last");
        assert_eq!(
            got,
            vec![
                ("k".to_string(), "int (at least 2)".to_string()),
                ("y".to_string(), "last".to_string())
            ]
        );
    }
}
