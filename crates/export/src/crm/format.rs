//! What each CRM's contact import accepts: its headers, how it writes a missing value, which
//! fields a row cannot go without, and how large one file may be.

use serde::Deserialize;

/// A CRM's import file convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrmFormat {
    /// HubSpot contacts import: matched by `Email`; segment properties named
    /// `segflow_<segmentation>_segment`, holding the property's internal values.
    Hubspot,
    /// Salesforce Bulk API 2.0 upsert on the External ID `Segflow_Customer_Id__c`: headers
    /// are field API names, `#N/A` sets a field to null.
    Salesforce,
    /// Zoho CRM contacts import: matched by Email; Last Name is required.
    Zoho,
    /// segflow's own column names, for any other tool.
    Generic,
}

/// The values a row of the import is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// customer_id.
    CustomerId,
    /// The customer's email.
    Email,
    /// The customer's last name.
    LastName,
    /// The snapshot's day.
    AsOf,
    /// A column of customer_segments (`rfm_segment`, `cluster_label`, ...).
    Segment(&'static str),
    /// The strategy (segment_catalog) of the customer's segment in a rule segmentation
    /// (`rfm`, ...).
    Strategy(&'static str),
}

/// The segment columns every format carries, in this order.
pub const SEGMENTS: &[&str] = &[
    "rfm_segment",
    "demographic_segment",
    "geographic_segment",
    "psychographic_segment",
    "engagement_segment",
    "clv_segment",
    "cluster_label",
];

impl CrmFormat {
    /// The name used in paths and manifests.
    pub fn name(self) -> &'static str {
        match self {
            CrmFormat::Hubspot => "hubspot",
            CrmFormat::Salesforce => "salesforce",
            CrmFormat::Zoho => "zoho",
            CrmFormat::Generic => "generic",
        }
    }

    /// The columns of a file: header and value.
    pub fn columns(self) -> Vec<(String, Value)> {
        let mut out = match self {
            CrmFormat::Hubspot => vec![
                ("Email".to_string(), Value::Email),
                ("segflow_customer_id".to_string(), Value::CustomerId),
            ],
            CrmFormat::Salesforce => vec![
                ("Segflow_Customer_Id__c".to_string(), Value::CustomerId),
                ("Email".to_string(), Value::Email),
            ],
            CrmFormat::Zoho => vec![
                ("Email".to_string(), Value::Email),
                ("Last Name".to_string(), Value::LastName),
                ("Segflow Customer ID".to_string(), Value::CustomerId),
            ],
            CrmFormat::Generic => vec![
                ("customer_id".to_string(), Value::CustomerId),
                ("email".to_string(), Value::Email),
                ("last_name".to_string(), Value::LastName),
            ],
        };
        for s in SEGMENTS {
            out.push((self.segment_header(s), Value::Segment(s)));
        }
        out.push((
            match self {
                CrmFormat::Hubspot => "segflow_as_of".into(),
                CrmFormat::Salesforce => "Segflow_As_Of__c".into(),
                CrmFormat::Zoho => "Segflow As Of".into(),
                CrmFormat::Generic => "as_of".into(),
            },
            Value::AsOf,
        ));
        // Then, for each rule segmentation (they came later), the strategy of the segment.
        for s in SEGMENTS.iter().filter_map(|c| c.strip_suffix("_segment")) {
            out.push((
                self.segment_header(&format!("{s}_strategy")),
                Value::Strategy(s),
            ));
        }
        out
    }

    /// The header of a segment column: `segflow_rfm_segment`, `Segflow_RFM_Segment__c`,
    /// `Segflow RFM Segment`.
    fn segment_header(self, column: &str) -> String {
        let words: Vec<String> = column
            .split('_')
            .map(|w| match w {
                "rfm" | "clv" => w.to_ascii_uppercase(),
                w => {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                }
            })
            .collect();
        match self {
            CrmFormat::Hubspot => format!("segflow_{column}"),
            CrmFormat::Salesforce => format!("Segflow_{}__c", words.join("_")),
            CrmFormat::Zoho => format!("Segflow {}", words.join(" ")),
            CrmFormat::Generic => column.to_string(),
        }
    }

    /// How a missing value is written: Salesforce's `#N/A` clears the field (an empty cell
    /// would leave it as it was); the others leave the cell empty.
    pub fn null(self) -> &'static str {
        match self {
            CrmFormat::Salesforce => "#N/A",
            _ => "",
        }
    }

    /// The values a row cannot go without, and why: such rows are not written but listed in
    /// the folder's `_skipped.csv`.
    pub fn required(self) -> &'static [(Value, &'static str)] {
        match self {
            CrmFormat::Hubspot => &[(Value::Email, "no email: HubSpot matches contacts by Email")],
            CrmFormat::Zoho => &[
                (Value::Email, "no email: Zoho matches contacts by Email"),
                (Value::LastName, "no last name: Zoho requires Last Name"),
            ],
            CrmFormat::Salesforce | CrmFormat::Generic => &[],
        }
    }

    /// The most data rows and bytes (header included) one file may have.
    pub fn limits(self) -> (Option<u64>, Option<u64>) {
        const MB: u64 = 1 << 20;
        match self {
            // HubSpot's import: 1,048,576 rows or 512 MB per file.
            CrmFormat::Hubspot => (Some(1_048_576), Some(512 * MB)),
            // Salesforce Bulk API 2.0: 100 MB of CSV per upload.
            CrmFormat::Salesforce => (None, Some(100 * MB)),
            // Zoho CRM's import: 25,000 rows or 25 MB per file.
            CrmFormat::Zoho => (Some(25_000), Some(25 * MB)),
            CrmFormat::Generic => (None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_each_crm() {
        let h = |f: CrmFormat| -> Vec<String> { f.columns().into_iter().map(|c| c.0).collect() };
        assert_eq!(
            h(CrmFormat::Hubspot)[..3],
            ["Email", "segflow_customer_id", "segflow_rfm_segment"]
        );
        assert_eq!(
            h(CrmFormat::Salesforce)[..3],
            ["Segflow_Customer_Id__c", "Email", "Segflow_RFM_Segment__c"]
        );
        assert!(h(CrmFormat::Salesforce).contains(&"Segflow_CLV_Segment__c".to_string()));
        assert_eq!(
            h(CrmFormat::Zoho)[..4],
            [
                "Email",
                "Last Name",
                "Segflow Customer ID",
                "Segflow RFM Segment"
            ]
        );
        assert_eq!(h(CrmFormat::Generic)[0], "customer_id");
        assert!(h(CrmFormat::Hubspot).contains(&"segflow_rfm_strategy".to_string()));
        assert!(h(CrmFormat::Salesforce).contains(&"Segflow_RFM_Strategy__c".to_string()));
        assert_eq!(h(CrmFormat::Generic).last().unwrap(), "clv_strategy");
    }
}
