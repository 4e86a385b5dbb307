-- campaign_performance: for each campaign x segmentation x segment, what the campaign achieved
-- among the segment's customers. Everything counted happened before as_of.
--   sends, opens, clicks   distinct customers with an email_sent / email_open / email_click
--                          event for the campaign (each counted on its own: an open whose
--                          send is missing from the export still counts as an open)
--   conversions, revenue   distinct customers with an order attributed to the campaign
--                          (orders.campaign_id), and the sum of those orders' amounts
--   open_rate, click_through_rate, conversion_rate, revenue_per_send   over sends (null: none)
--   lift                   conversion_rate / the campaign's conversion rate over all segments
-- A customer's segment is the one in the latest segment_history snapshot with as_of on or
-- before the campaign's first send (snapshot_as_of), else this run's (snapshot_as_of null);
-- a customer that snapshot does not have is in segment `new`. Every campaign with counted
-- activity is here: one with attributed orders but no send has 0 sends, null rates and this
-- run's segments. Reads campaign_activity (one row per campaign and customer),
-- customer_segments and segment_history_before; $as_of: the day, a date or 'YYYY-MM-DD' (the
-- default pipeline reads it from run_as_of).
--
-- Shape, for speed: each campaign customer is joined once to its snapshot's wide row (not seven
-- times to a long one), and only then fanned out to the seven segmentations by unnesting arrays
-- (a cross join with their names came out in batches of a few rows), so no join's build side
-- is seven times the customers. A history snapshot published before the clv segmentation
-- existed has no clv segment: its customers are in segment `new` there.
with campaigns as (
    select
        a.campaign_id,
        min(a.first_sent) as first_send,
        cast(sum(a.converted) as double) / nullif(sum(a.sent), 0) as conversion_rate
    from campaign_activity as a
    group by a.campaign_id
),

snapshot_of as (
    select c.campaign_id, c.conversion_rate, max(h.as_of) as snapshot_as_of
    from campaigns as c
    left join (select distinct h.as_of from segment_history_before as h) as h
        on h.as_of <= c.first_send
    group by c.campaign_id, c.conversion_rate
),

-- This run's snapshot is keyed by as_of: every chosen history snapshot is on or before a
-- first send, so before as_of, and the keys cannot collide.
keyed as (
    select so.campaign_id, so.conversion_rate, so.snapshot_as_of,
        coalesce(so.snapshot_as_of, cast($as_of as date)) as snapshot_key
    from snapshot_of as so
),

snapshots as (
    select
        h.as_of as snapshot_key,
        h.customer_id,
        h.rfm_segment,
        h.demographic_segment,
        h.geographic_segment,
        h.psychographic_segment,
        h.engagement_segment,
        coalesce(cast(h.cluster_id as varchar), 'unclustered') as cluster_segment,
        h.clv_segment
    from segment_history_before as h
    where h.as_of in (select k.snapshot_as_of from keyed as k)
    union all
    select
        cast($as_of as date),
        s.customer_id,
        s.rfm_segment,
        s.demographic_segment,
        s.geographic_segment,
        s.psychographic_segment,
        s.engagement_segment,
        coalesce(cast(s.cluster_id as varchar), 'unclustered'),
        s.clv_segment
    from customer_segments as s
),

-- Each campaign customer with their segments in the campaign's snapshot (all null when the
-- snapshot lacks the customer: segment `new`).
placed as (
    select
        a.campaign_id,
        k.snapshot_as_of,
        a.sent,
        a.opened,
        a.clicked,
        a.converted,
        a.revenue,
        s.rfm_segment,
        s.demographic_segment,
        s.geographic_segment,
        s.psychographic_segment,
        s.engagement_segment,
        s.cluster_segment,
        s.clv_segment
    from campaign_activity as a
    inner join keyed as k
        on k.campaign_id = a.campaign_id
    left join snapshots as s
        on s.customer_id = a.customer_id and s.snapshot_key = k.snapshot_key
),

-- Fanned out to the seven segmentations by unnesting arrays of names and segments (zipped).
fanned as (
    select
        p.campaign_id,
        p.snapshot_as_of,
        unnest([
            'rfm', 'demographic', 'geographic', 'psychographic', 'engagement', 'cluster', 'clv'
        ]) as segmentation,
        unnest([
            p.rfm_segment,
            p.demographic_segment,
            p.geographic_segment,
            p.psychographic_segment,
            p.engagement_segment,
            p.cluster_segment,
            p.clv_segment
        ]) as segment,
        p.sent,
        p.opened,
        p.clicked,
        p.converted,
        p.revenue
    from placed as p
),

per_segment as (
    select
        f.campaign_id,
        f.segmentation,
        coalesce(f.segment, 'new') as segment,
        f.snapshot_as_of,
        sum(f.sent) as sends,
        sum(f.opened) as opens,
        sum(f.clicked) as clicks,
        sum(f.converted) as conversions,
        sum(f.revenue) as revenue
    from fanned as f
    group by f.campaign_id, f.segmentation, coalesce(f.segment, 'new'), f.snapshot_as_of
)

select
    s.campaign_id,
    s.segmentation,
    s.segment,
    s.snapshot_as_of,
    cast(s.sends as bigint) as sends,
    cast(s.opens as bigint) as opens,
    cast(s.clicks as bigint) as clicks,
    cast(s.conversions as bigint) as conversions,
    cast(s.revenue as decimal(18, 2)) as revenue,
    cast(s.opens as double) / nullif(s.sends, 0) as open_rate,
    cast(s.clicks as double) / nullif(s.sends, 0) as click_through_rate,
    cast(s.conversions as double) / nullif(s.sends, 0) as conversion_rate,
    cast(s.revenue as double) / nullif(s.sends, 0) as revenue_per_send,
    (cast(s.conversions as double) / nullif(s.sends, 0)) / nullif(k.conversion_rate, 0) as lift
from per_segment as s
inner join keyed as k
    on k.campaign_id = s.campaign_id
