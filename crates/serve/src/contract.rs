//! Column comments of the output contract ([`segflow_core::comments`]) as Flight SQL column
//! metadata, for BI tools' column descriptions.

use segflow_core::comments::Comments;
use segflow_core::datafusion::arrow::datatypes::{Field, Schema, SchemaRef};

/// The Flight SQL column metadata key for a column's description (the JDBC driver's
/// `REMARKS`, ADBC's `xdbc_remarks`).
pub const REMARKS: &str = "ARROW:FLIGHT:SQL:REMARKS";

/// `schema` with each column's comment in its field metadata ([`REMARKS`]).
pub fn annotate(comments: &Comments, table: &str, schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let field = f.as_ref().clone();
            match comments.get(table, f.name()) {
                Some(c) => {
                    let mut md = field.metadata().clone();
                    md.insert(REMARKS.to_string(), c.to_string());
                    field.with_metadata(md)
                }
                None => field,
            }
        })
        .collect();
    std::sync::Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}
