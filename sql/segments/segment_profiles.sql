-- segment_profiles: one row per (segmentation, segment) of customer_segments, what a marketer
-- reads to understand a segment. Reads customer_segments, customer_features, orders, run_as_of.
--   customers, customer_share   members; share of all customers (sizes add up per segmentation)
--   revenue, revenue_share      sum of members' monetary (refunds included; none = 0); share of
--                               all customers' revenue (null when that is 0)
--   mean_* / median_*           over members with a value (recency, frequency, monetary and
--                               avg_order_value are null for customers without orders)
--   top_category, top_channel   most counted orders (before as_of) among members; ties alphabetical
--   top_interest                most common top_interest among members; ties alphabetical
--   email_open_rate_90d         members' opens over members' sends in 90 days (null: none sent)
with run as (
    select r.as_of
    from run_as_of as r
),

membership as (
    select 'rfm' as segmentation, s.rfm_segment as segment, s.customer_id from customer_segments as s
    union all
    select 'demographic', s.demographic_segment, s.customer_id from customer_segments as s
    union all
    select 'geographic', s.geographic_segment, s.customer_id from customer_segments as s
    union all
    select 'psychographic', s.psychographic_segment, s.customer_id from customer_segments as s
    union all
    select 'engagement', s.engagement_segment, s.customer_id from customer_segments as s
    union all
    -- Clusters by label; customers outside the clustering (no orders) form their own segment.
    select 'cluster', coalesce(s.cluster_label, 'unclustered'), s.customer_id
    from customer_segments as s
),

totals as (
    select
        count(*) as customers,
        sum(coalesce(f.monetary, 0)) as revenue
    from customer_features as f
),

sizes as (
    select
        m.segmentation,
        m.segment,
        count(*) as customers,
        sum(coalesce(f.monetary, 0)) as revenue,
        avg(cast(f.recency_days as double)) as mean_recency_days,
        avg(cast(f.frequency as double)) as mean_frequency,
        avg(cast(f.monetary as double)) as mean_monetary,
        avg(cast(f.avg_order_value as double)) as mean_avg_order_value,
        sum(f.emails_opened_90d) as opened,
        sum(f.emails_sent_90d) as sent
    from membership as m
    inner join customer_features as f
        on f.customer_id = m.customer_id
    group by m.segmentation, m.segment
),

-- Exact medians from ranks: the window's sort spills under a memory limit, where a median
-- aggregate (every value of every group held in memory) cannot and failed the stage.
member_features as (
    select m.segmentation, m.segment, f.recency_days, f.frequency, f.monetary, f.avg_order_value
    from membership as m
    inner join customer_features as f
        on f.customer_id = m.customer_id
),

median_values as (
    select mf.segmentation, mf.segment, 1 as feature, cast(mf.recency_days as double) as value
    from member_features as mf
    where mf.recency_days is not null
    union all
    select mf.segmentation, mf.segment, 2, cast(mf.frequency as double)
    from member_features as mf
    where mf.frequency is not null
    union all
    select mf.segmentation, mf.segment, 3, cast(mf.monetary as double)
    from member_features as mf
    where mf.monetary is not null
    union all
    select mf.segmentation, mf.segment, 4, cast(mf.avg_order_value as double)
    from member_features as mf
    where mf.avg_order_value is not null
),

median_counts as (
    select mv.segmentation, mv.segment, mv.feature, count(*) as n
    from median_values as mv
    group by mv.segmentation, mv.segment, mv.feature
),

ranked_values_for_median as (
    select
        mv.segmentation,
        mv.segment,
        mv.feature,
        mv.value,
        row_number() over (
            partition by mv.segmentation, mv.segment, mv.feature order by mv.value
        ) as rn
    from median_values as mv
),

-- The middle value, or the mean of the two middle values of an even count.
medians as (
    select
        r.segmentation,
        r.segment,
        avg(case when r.feature = 1 then r.value end) as median_recency_days,
        avg(case when r.feature = 2 then r.value end) as median_frequency,
        avg(case when r.feature = 3 then r.value end) as median_monetary,
        avg(case when r.feature = 4 then r.value end) as median_avg_order_value
    from ranked_values_for_median as r
    inner join median_counts as mc
        on
            mc.segmentation = r.segmentation
            and (mc.segment is not distinct from r.segment)
            and mc.feature = r.feature
    where r.rn in ((mc.n + 1) / 2, (mc.n + 2) / 2)
    group by r.segmentation, r.segment
),

counted_orders as (
    select
        o.customer_id,
        o.category,
        o.channel
    from orders as o
    cross join run
    where cast(o.order_ts as date) < run.as_of
),

-- The most common value of each attribute among a segment's members: categories and channels
-- of their counted orders, and their top interests.
member_values as (
    select m.segmentation, m.segment, 'category' as attribute, co.category as value
    from membership as m
    inner join counted_orders as co
        on co.customer_id = m.customer_id
    where co.category is not null
    union all
    select m.segmentation, m.segment, 'channel', co.channel
    from membership as m
    inner join counted_orders as co
        on co.customer_id = m.customer_id
    where co.channel is not null
    union all
    select m.segmentation, m.segment, 'interest', f.top_interest
    from membership as m
    inner join customer_features as f
        on f.customer_id = m.customer_id
    where f.top_interest is not null
),

ranked_values as (
    select
        mv.segmentation,
        mv.segment,
        mv.attribute,
        mv.value,
        row_number() over (
            partition by mv.segmentation, mv.segment, mv.attribute
            order by count(*) desc, mv.value asc
        ) as pick
    from member_values as mv
    group by mv.segmentation, mv.segment, mv.attribute, mv.value
),

top_values as (
    select
        rv.segmentation,
        rv.segment,
        max(case when rv.attribute = 'category' then rv.value end) as top_category,
        max(case when rv.attribute = 'channel' then rv.value end) as top_channel,
        max(case when rv.attribute = 'interest' then rv.value end) as top_interest
    from ranked_values as rv
    where rv.pick = 1
    group by rv.segmentation, rv.segment
)

select
    s.segmentation,
    s.segment,
    s.customers,
    cast(s.customers as double) / t.customers as customer_share,
    cast(s.revenue as decimal(18, 2)) as revenue,
    case when t.revenue <> 0 then cast(s.revenue as double) / cast(t.revenue as double) end
        as revenue_share,
    s.mean_recency_days,
    md.median_recency_days,
    s.mean_frequency,
    md.median_frequency,
    s.mean_monetary,
    md.median_monetary,
    s.mean_avg_order_value,
    md.median_avg_order_value,
    tv.top_category,
    tv.top_channel,
    tv.top_interest,
    case when s.sent > 0 then cast(s.opened as double) / s.sent end as email_open_rate_90d
from sizes as s
cross join totals as t
left join top_values as tv
    on tv.segmentation = s.segmentation and tv.segment = s.segment
left join medians as md
    on md.segmentation = s.segmentation and (md.segment is not distinct from s.segment)
