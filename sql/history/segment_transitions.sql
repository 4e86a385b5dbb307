-- segment_transitions: one row per customer of this run's snapshot and segmentation: its
-- segment in the previous snapshot (from_segment; null when that snapshot lacks the customer or
-- there is none) and now (to_segment), with both as_of (from_as_of null when there is no
-- previous snapshot). segment_migrations counts these, segment_changes filters them. Reads
-- customer_segments and previous_segments; $as_of is the day, a date or 'YYYY-MM-DD' (the
-- default pipeline reads it from run_as_of). The `cluster` segmentation's segments are
-- cluster ids (as text; `unclustered` for customers without one): the clusters stage matches
-- each run's clusters to the previous centers, so an id names the same group from run to run.
-- A snapshot published before a segmentation existed (clv) has no segment there: its customers'
-- from_segment is null, as for a customer it lacks.
--
-- Shape, for speed: the two snapshots are joined once, wide (one row per customer), and the
-- joined rows are then fanned out to the seven segmentations by unnesting arrays (zipped).
with previous as (
    select max(p.as_of) as as_of
    from previous_segments as p
),

joined as (
    select
        c.customer_id,
        p.rfm_segment as rfm_from,
        c.rfm_segment as rfm_to,
        p.demographic_segment as demographic_from,
        c.demographic_segment as demographic_to,
        p.geographic_segment as geographic_from,
        c.geographic_segment as geographic_to,
        p.psychographic_segment as psychographic_from,
        c.psychographic_segment as psychographic_to,
        p.engagement_segment as engagement_from,
        c.engagement_segment as engagement_to,
        case
            when p.customer_id is not null
                then coalesce(cast(p.cluster_id as varchar), 'unclustered')
        end as cluster_from,
        coalesce(cast(c.cluster_id as varchar), 'unclustered') as cluster_to,
        p.clv_segment as clv_from,
        c.clv_segment as clv_to
    from customer_segments as c
    left join previous_segments as p
        on p.customer_id = c.customer_id
)

select
    j.customer_id,
    unnest([
        'rfm', 'demographic', 'geographic', 'psychographic', 'engagement', 'cluster', 'clv'
    ]) as segmentation,
    prev.as_of as from_as_of,
    cast($as_of as date) as to_as_of,
    unnest([
        j.rfm_from,
        j.demographic_from,
        j.geographic_from,
        j.psychographic_from,
        j.engagement_from,
        j.cluster_from,
        j.clv_from
    ]) as from_segment,
    unnest([
        j.rfm_to,
        j.demographic_to,
        j.geographic_to,
        j.psychographic_to,
        j.engagement_to,
        j.cluster_to,
        j.clv_to
    ]) as to_segment
from previous as prev
cross join joined as j
