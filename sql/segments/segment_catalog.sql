-- segment_catalog: one row per (segmentation, segment) of the rule segmentations: what the
-- segment is and what to do with it (from the pipeline's YAML), and how many customers and how
-- much revenue it holds now. Reads segment_rules (the `catalog:` output of the segment.rules
-- stage: segmentation, segment, segmentation_order, rule_order, rule, is_default, description,
-- strategy), segment_profiles and run_as_of.
--   rule          the rule as written (rules giving one segment joined with `or`); null for a
--                 default no rule gives
--   customers ... revenue_share   as in segment_profiles; a segment no customer is in has
--                 customers 0, revenue 0 and shares 0 (revenue_share null when all revenue is 0)
select
    r.segmentation,
    r.segment,
    r.segmentation_order,
    r.rule_order,
    r.rule,
    r.is_default,
    r.description,
    r.strategy,
    a.as_of,
    coalesce(p.customers, 0) as customers,
    coalesce(p.customer_share, 0.0) as customer_share,
    coalesce(p.revenue, cast(0 as decimal(18, 2))) as revenue,
    case
        when p.revenue_share is not null then p.revenue_share
        when t.revenue_known then 0.0
    end as revenue_share
from segment_rules as r
cross join run_as_of as a
cross join (
    select bool_or(sp.revenue_share is not null) as revenue_known from segment_profiles as sp
) as t
left join segment_profiles as p
    on p.segmentation = r.segmentation and p.segment = r.segment
