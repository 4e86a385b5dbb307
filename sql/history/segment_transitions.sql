-- segment_transitions: one row per customer of this run's snapshot and segmentation: its
-- segment in the previous snapshot (from_segment; null when that snapshot lacks the customer or
-- there is none) and now (to_segment), with both as_of (from_as_of null when there is no
-- previous snapshot). segment_migrations counts these, segment_changes filters them. Reads
-- customer_segments, previous_segments and run_as_of. The `cluster` segmentation's segments are
-- cluster ids (as text; `unclustered` for customers without one): the clusters stage matches
-- each run's clusters to the previous centers, so an id names the same group from run to run.
with run as (
    select r.as_of
    from run_as_of as r
),

previous as (
    select max(p.as_of) as as_of
    from previous_segments as p
),

snapshots as (
    select
        'current' as snapshot,
        s.customer_id,
        s.rfm_segment,
        s.demographic_segment,
        s.geographic_segment,
        s.psychographic_segment,
        s.engagement_segment,
        coalesce(cast(s.cluster_id as varchar), 'unclustered') as cluster_segment
    from customer_segments as s
    union all
    select
        'previous',
        p.customer_id,
        p.rfm_segment,
        p.demographic_segment,
        p.geographic_segment,
        p.psychographic_segment,
        p.engagement_segment,
        coalesce(cast(p.cluster_id as varchar), 'unclustered')
    from previous_segments as p
),

members as (
    select s.snapshot, s.customer_id, 'rfm' as segmentation, s.rfm_segment as segment from snapshots as s
    union all
    select s.snapshot, s.customer_id, 'demographic', s.demographic_segment from snapshots as s
    union all
    select s.snapshot, s.customer_id, 'geographic', s.geographic_segment from snapshots as s
    union all
    select s.snapshot, s.customer_id, 'psychographic', s.psychographic_segment from snapshots as s
    union all
    select s.snapshot, s.customer_id, 'engagement', s.engagement_segment from snapshots as s
    union all
    select s.snapshot, s.customer_id, 'cluster', s.cluster_segment from snapshots as s
)

select
    c.customer_id,
    c.segmentation,
    p.as_of as from_as_of,
    run.as_of as to_as_of,
    m.segment as from_segment,
    c.segment as to_segment
from members as c
left join members as m
    on m.snapshot = 'previous'
    and m.customer_id = c.customer_id
    and m.segmentation = c.segmentation
cross join run
cross join previous as p
where c.snapshot = 'current'
