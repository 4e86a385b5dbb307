//! The k-means functions as bytes, for a distributed engine's codecs (`segflow-distributed`):
//! a pass travels as the pass ([`Pass::encode`](super::kernel::Pass::encode): its task, its
//! centers, its draws), an assignment as its centers, ids and fitted transforms. The executors
//! compute with exactly the bits this process fitted.

use std::sync::Arc;

use segflow_core::datafusion::error::Result;
use segflow_core::datafusion::logical_expr::{AggregateUDF, ScalarUDF};

use super::udf::{KMeansAssign, KMeansPass};

/// The bytes of `kmeans_assign`; `None` for any other function.
pub fn encode_udf(udf: &ScalarUDF) -> Option<Vec<u8>> {
    udf.inner()
        .downcast_ref::<KMeansAssign>()
        .map(KMeansAssign::encode)
}

/// `kmeans_assign` from [`encode_udf`]'s bytes.
pub fn decode_udf(bytes: &[u8]) -> Result<Arc<ScalarUDF>> {
    KMeansAssign::decode(bytes).map(Arc::new)
}

/// The bytes of `kmeans_pass`; `None` for any other aggregate.
pub fn encode_udaf(udaf: &AggregateUDF) -> Option<Vec<u8>> {
    udaf.inner()
        .downcast_ref::<KMeansPass>()
        .map(|p| p.bytes().to_vec())
}

/// `kmeans_pass` from [`encode_udaf`]'s bytes.
pub fn decode_udaf(bytes: &[u8]) -> Result<Arc<AggregateUDF>> {
    KMeansPass::from_bytes(bytes).map(Arc::new)
}
