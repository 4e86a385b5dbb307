-- segment_profiles: one row per (segmentation, segment) of customer_segments, what a marketer
-- reads to understand a segment. Reads customer_segments, customer_features and orders;
-- $as_of: the day, a date or 'YYYY-MM-DD' (the default pipeline reads it from run_as_of).
--   customers, customer_share   members; share of all customers (sizes add up per segmentation)
--   revenue, revenue_share      sum of members' monetary (refunds included; none = 0); share of
--                               all customers' revenue (null when that is 0)
--   mean_* / median_*           over members with a value (recency, frequency, monetary and
--                               avg_order_value are null for customers without orders)
--   top_category, top_channel   most counted orders (before as_of) among members; ties alphabetical
--   top_interest                most common top_interest among members; ties alphabetical
--   email_open_rate_90d         members' opens over members' sends in 90 days (null: none sent)
--   mean_predicted_clv          over members with a prediction (a counted order), as is
--   mean_p_alive                the mean probability of being alive
--
-- Shape, for speed: every join is between per-customer rows (one wide row of segments per
-- customer), and a row is fanned out to the seven segmentations (unnest of arrays, not a cross
-- join, whose output here came in batches of a few rows) only after it is joined, and orders
-- only after they are counted per combination of segments.
-- One row per customer: the segment in each segmentation (clusters by label; customers outside
-- the clustering, without orders, form their own segment).
with segment_rows as (
    select
        s.customer_id,
        s.rfm_segment,
        s.demographic_segment,
        s.geographic_segment,
        s.psychographic_segment,
        s.engagement_segment,
        coalesce(s.cluster_label, 'unclustered') as cluster_segment,
        s.clv_segment,
        s.predicted_clv,
        s.p_alive
    from customer_segments as s
),

-- The same, with the profiled features.
members as (
    select
        sr.*,
        f.recency_days,
        f.frequency,
        f.monetary,
        f.avg_order_value,
        f.top_interest,
        f.emails_opened_90d,
        f.emails_sent_90d
    from segment_rows as sr
    inner join customer_features as f
        on f.customer_id = sr.customer_id
),

-- Each member once per segmentation, with its segment there: an unnest of two arrays of seven
-- (names and segments, zipped), which keeps the input's batches whole.
membership as (
    select
        unnest([
            'rfm', 'demographic', 'geographic', 'psychographic', 'engagement', 'cluster', 'clv'
        ]) as segmentation,
        unnest([
            m.rfm_segment,
            m.demographic_segment,
            m.geographic_segment,
            m.psychographic_segment,
            m.engagement_segment,
            m.cluster_segment,
            m.clv_segment
        ]) as segment,
        m.predicted_clv,
        m.p_alive,
        m.recency_days,
        m.frequency,
        m.monetary,
        m.avg_order_value,
        m.top_interest,
        m.emails_opened_90d,
        m.emails_sent_90d
    from members as m
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
        sum(coalesce(m.monetary, 0)) as revenue,
        avg(cast(m.recency_days as double)) as mean_recency_days,
        avg(cast(m.frequency as double)) as mean_frequency,
        -- Amounts are averaged as decimals, exactly, and only then made double: a sum of
        -- doubles depends on the order rows arrive in, so reruns differed in the last digits.
        cast(avg(m.monetary) as double) as mean_monetary,
        cast(avg(m.avg_order_value) as double) as mean_avg_order_value,
        -- Exact: the middle value, or the mean of the two middle ones. The aggregate holds
        -- every member's values (4 x 8 bytes per member and segmentation: about 200 MB at 1M
        -- customers). Counting equal values first, to sort fewer, made one group per segment
        -- and distinct value: nearly every monetary value is distinct, so about 12M groups at
        -- 1M customers, and a window sort over them.
        median(cast(m.recency_days as double)) as median_recency_days,
        median(cast(m.frequency as double)) as median_frequency,
        median(cast(m.monetary as double)) as median_monetary,
        median(cast(m.avg_order_value as double)) as median_avg_order_value,
        sum(m.emails_opened_90d) as opened,
        sum(m.emails_sent_90d) as sent,
        -- As decimals for the same reason (predicted_clv to 1e-6, p_alive to 1e-12).
        cast(avg(cast(m.predicted_clv as decimal(38, 6))) as double) as mean_predicted_clv,
        cast(avg(cast(m.p_alive as decimal(38, 12))) as double) as mean_p_alive
    from membership as m
    group by m.segmentation, m.segment
),

-- Every combination of segments that some customer has, numbered: orders are counted per
-- combination number (some thousands), not per seven segment names, so the 8.5M-row join and
-- aggregate below carry one integer instead of seven strings.
combinations as (
    select
        sr.rfm_segment,
        sr.demographic_segment,
        sr.geographic_segment,
        sr.psychographic_segment,
        sr.engagement_segment,
        sr.cluster_segment,
        sr.clv_segment,
        row_number() over (
            order by
                sr.rfm_segment, sr.demographic_segment, sr.geographic_segment,
                sr.psychographic_segment, sr.engagement_segment, sr.cluster_segment,
                sr.clv_segment
        ) as combination
    from segment_rows as sr
    group by 1, 2, 3, 4, 5, 6, 7
),

member_combinations as (
    select sr.customer_id, c.combination
    from combinations as c
    inner join segment_rows as sr
        on (sr.rfm_segment is not distinct from c.rfm_segment)
        and (sr.demographic_segment is not distinct from c.demographic_segment)
        and (sr.geographic_segment is not distinct from c.geographic_segment)
        and (sr.psychographic_segment is not distinct from c.psychographic_segment)
        and (sr.engagement_segment is not distinct from c.engagement_segment)
        and (sr.cluster_segment is not distinct from c.cluster_segment)
        and (sr.clv_segment is not distinct from c.clv_segment)
),

-- Counted orders per combination of segments and (category, channel): far fewer rows than
-- orders, so the fan-out to seven segmentations below stays small.
combination_mix as (
    select mc.combination, o.category, o.channel, count(*) as n
    from member_combinations as mc
    inner join orders as o
        on o.customer_id = mc.customer_id
    -- Its date (UTC) before as_of: before as_of's midnight, a literal (no cast per order).
    where o.order_ts < arrow_cast(cast($as_of as date), 'Timestamp(Microsecond, Some("UTC"))')
    group by 1, 2, 3
),

order_mix as (
    select
        c.rfm_segment,
        c.demographic_segment,
        c.geographic_segment,
        c.psychographic_segment,
        c.engagement_segment,
        c.cluster_segment,
        c.clv_segment,
        cm.category,
        cm.channel,
        cm.n
    from combinations as c
    inner join combination_mix as cm
        on cm.combination = c.combination
),

-- The most common value of each attribute among a segment's members: categories and channels
-- of their counted orders, and their top interests.
member_values as (
    select
        unnest([
            'rfm', 'demographic', 'geographic', 'psychographic', 'engagement', 'cluster', 'clv',
            'rfm', 'demographic', 'geographic', 'psychographic', 'engagement', 'cluster', 'clv'
        ]) as segmentation,
        unnest([
            om.rfm_segment, om.demographic_segment, om.geographic_segment,
            om.psychographic_segment, om.engagement_segment, om.cluster_segment, om.clv_segment,
            om.rfm_segment, om.demographic_segment, om.geographic_segment,
            om.psychographic_segment, om.engagement_segment, om.cluster_segment, om.clv_segment
        ]) as segment,
        unnest([
            'category', 'category', 'category', 'category', 'category', 'category', 'category',
            'channel', 'channel', 'channel', 'channel', 'channel', 'channel', 'channel'
        ]) as attribute,
        unnest([
            om.category, om.category, om.category, om.category, om.category, om.category,
            om.category,
            om.channel, om.channel, om.channel, om.channel, om.channel, om.channel, om.channel
        ]) as value,
        om.n
    from order_mix as om
    union all
    select m.segmentation, m.segment, 'interest', m.top_interest, 1
    from membership as m
),

ranked_values as (
    select
        mv.segmentation,
        mv.segment,
        mv.attribute,
        mv.value,
        row_number() over (
            partition by mv.segmentation, mv.segment, mv.attribute
            order by sum(mv.n) desc, mv.value asc
        ) as pick
    from member_values as mv
    where mv.value is not null
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
    s.median_recency_days,
    s.mean_frequency,
    s.median_frequency,
    s.mean_monetary,
    s.median_monetary,
    s.mean_avg_order_value,
    s.median_avg_order_value,
    tv.top_category,
    tv.top_channel,
    tv.top_interest,
    case when s.sent > 0 then cast(s.opened as double) / s.sent end as email_open_rate_90d,
    s.mean_predicted_clv,
    s.mean_p_alive
from sizes as s
cross join totals as t
left join top_values as tv
    on tv.segmentation = s.segmentation and (tv.segment is not distinct from s.segment)
