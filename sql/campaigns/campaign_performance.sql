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
-- a customer that snapshot does not have is in segment `new`. Campaigns without a send are
-- left out. Reads events, orders, customer_segments, segment_history_before and run_as_of.
with run as (
    select r.as_of
    from run_as_of as r
),

email as (
    select e.campaign_id, e.customer_id, e.event_type, cast(e.event_ts as date) as day
    from events as e
    cross join run
    where e.campaign_id is not null
        and e.event_type in ('email_sent', 'email_open', 'email_click')
        and cast(e.event_ts as date) < run.as_of
),

campaigns as (
    select e.campaign_id, min(e.day) as first_send
    from email as e
    where e.event_type = 'email_sent'
    group by e.campaign_id
),

snapshot_of as (
    select c.campaign_id, max(h.as_of) as snapshot_as_of
    from campaigns as c
    left join (select distinct h.as_of from segment_history_before as h) as h
        on h.as_of <= c.first_send
    group by c.campaign_id
),

snapshots as (
    select
        h.as_of as snapshot_as_of,
        h.customer_id,
        h.rfm_segment,
        h.demographic_segment,
        h.geographic_segment,
        h.psychographic_segment,
        h.engagement_segment,
        coalesce(cast(h.cluster_id as varchar), 'unclustered') as cluster_segment
    from segment_history_before as h
    where h.as_of in (select s.snapshot_as_of from snapshot_of as s)
    union all
    select
        cast(null as date),
        s.customer_id,
        s.rfm_segment,
        s.demographic_segment,
        s.geographic_segment,
        s.psychographic_segment,
        s.engagement_segment,
        coalesce(cast(s.cluster_id as varchar), 'unclustered')
    from customer_segments as s
),

members as (
    select s.snapshot_as_of, s.customer_id, 'rfm' as segmentation, s.rfm_segment as segment from snapshots as s
    union all
    select s.snapshot_as_of, s.customer_id, 'demographic', s.demographic_segment from snapshots as s
    union all
    select s.snapshot_as_of, s.customer_id, 'geographic', s.geographic_segment from snapshots as s
    union all
    select s.snapshot_as_of, s.customer_id, 'psychographic', s.psychographic_segment from snapshots as s
    union all
    select s.snapshot_as_of, s.customer_id, 'engagement', s.engagement_segment from snapshots as s
    union all
    select s.snapshot_as_of, s.customer_id, 'cluster', s.cluster_segment from snapshots as s
),

segmentations as (
    select distinct m.segmentation
    from members as m
),

activity as (
    select
        e.campaign_id,
        e.customer_id,
        max(case when e.event_type = 'email_sent' then 1 else 0 end) as sent,
        max(case when e.event_type = 'email_open' then 1 else 0 end) as opened,
        max(case when e.event_type = 'email_click' then 1 else 0 end) as clicked
    from email as e
    group by e.campaign_id, e.customer_id
),

converted as (
    select o.campaign_id, o.customer_id, sum(o.amount) as revenue
    from orders as o
    cross join run
    where o.campaign_id is not null
        and cast(o.order_ts as date) < run.as_of
    group by o.campaign_id, o.customer_id
),

per_customer as (
    select
        coalesce(a.campaign_id, v.campaign_id) as campaign_id,
        coalesce(a.customer_id, v.customer_id) as customer_id,
        coalesce(a.sent, 0) as sent,
        coalesce(a.opened, 0) as opened,
        coalesce(a.clicked, 0) as clicked,
        case when v.customer_id is null then 0 else 1 end as conversions,
        coalesce(v.revenue, 0) as revenue
    from activity as a
    full outer join converted as v
        on v.campaign_id = a.campaign_id and v.customer_id = a.customer_id
),

per_segment as (
    select
        p.campaign_id,
        g.segmentation,
        coalesce(m.segment, 'new') as segment,
        so.snapshot_as_of,
        sum(p.sent) as sends,
        sum(p.opened) as opens,
        sum(p.clicked) as clicks,
        sum(p.conversions) as conversions,
        sum(p.revenue) as revenue
    from per_customer as p
    inner join snapshot_of as so
        on so.campaign_id = p.campaign_id
    cross join segmentations as g
    left join members as m
        on m.customer_id = p.customer_id
        and m.segmentation = g.segmentation
        and m.snapshot_as_of is not distinct from so.snapshot_as_of
    group by p.campaign_id, g.segmentation, coalesce(m.segment, 'new'), so.snapshot_as_of
),

overall as (
    select
        p.campaign_id,
        cast(sum(p.conversions) as double) / nullif(sum(p.sent), 0) as conversion_rate
    from per_customer as p
    group by p.campaign_id
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
    (cast(s.conversions as double) / nullif(s.sends, 0)) / nullif(o.conversion_rate, 0) as lift
from per_segment as s
inner join overall as o
    on o.campaign_id = s.campaign_id
