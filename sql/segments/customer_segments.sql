-- customer_segments: the published segment table (output contract v1), one row per customer.
-- Reads `clustered`: customer_features with one `<name>_segment` column per rule segmentation
-- (added by the segment.rules stages) and `cluster_id` (segment.kmeans; null for customers not
-- clustered), and `cluster_centers` for each cluster's label. Keeps the RFM values behind
-- rfm_segment, p_alive and predicted_clv behind clv_segment (null without a counted order), and
-- every segment column; the features themselves are published as customer_features, the CLV
-- predictions as customer_clv. Columns added after v1's first release come last.
select
    s.customer_id,
    s.as_of,
    s.recency_days,
    s.frequency,
    s.monetary,
    s.r_score,
    s.f_score,
    s.m_score,
    s.rfm_segment,
    s.demographic_segment,
    s.geographic_segment,
    s.psychographic_segment,
    s.engagement_segment,
    s.cluster_id,
    c.label as cluster_label,
    s.p_alive,
    s.predicted_clv,
    s.clv_segment
from clustered as s
left join cluster_centers as c
    on c.cluster_id = s.cluster_id
