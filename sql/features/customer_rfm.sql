-- customer_rfm: one row per customer_id in customers, RFM values and scores at the run's as_of.
-- Reads customers, orders, and run_as_of (one row: as_of).
--   recency_days  whole days from the latest counted order's date (UTC) to as_of
--   frequency     distinct order_id counted; monetary: their amounts summed, refunds included
--   r/f/m_score   1 + floor(5 * (rank - 1) / n), rank() over the n customers with a counted
--                 order; recency ranks descending (most recent = 5), frequency and monetary
--                 ascending; ties share a rank and so a score
-- Customers without a counted order keep their row, with null RFM columns.
with run as (
    select r.as_of
    from run_as_of as r
),

counted_orders as (
    select
        o.customer_id,
        o.order_id,
        cast(o.order_ts as date) as order_date,
        o.amount
    from orders as o
    cross join run
    where cast(o.order_ts as date) < run.as_of
),

per_customer as (
    select
        co.customer_id,
        max(co.order_date) as last_order_date,
        -- order_id is unique in orders (the contract's `unique: [order_id]` quarantines
        -- repeats), so counting rows counts distinct orders; count(distinct) on text keeps a
        -- hash set per customer that cannot spill, and failed under a memory limit.
        count(co.order_id) as frequency,
        sum(co.amount) as monetary
    from counted_orders as co
    group by co.customer_id
),

rfm_values as (
    select
        pc.customer_id,
        cast(run.as_of as bigint) - cast(pc.last_order_date as bigint) as recency_days,
        pc.frequency,
        pc.monetary
    from per_customer as pc
    cross join run
),

ranked as (
    select
        v.customer_id,
        v.recency_days,
        v.frequency,
        v.monetary,
        count(*) over () as n,
        rank() over (order by v.recency_days desc) as r_rank,
        rank() over (order by v.frequency asc) as f_rank,
        rank() over (order by v.monetary asc) as m_rank
    from rfm_values as v
)

select
    c.customer_id,
    run.as_of,
    cast(rk.recency_days as int) as recency_days,
    cast(rk.frequency as int) as frequency,
    cast(rk.monetary as decimal(18, 2)) as monetary,
    cast(1 + (5 * (cast(rk.r_rank as bigint) - 1)) / rk.n as int) as r_score,
    cast(1 + (5 * (cast(rk.f_rank as bigint) - 1)) / rk.n as int) as f_score,
    cast(1 + (5 * (cast(rk.m_rank as bigint) - 1)) / rk.n as int) as m_score
from customers as c
cross join run
left join ranked as rk
    on rk.customer_id = c.customer_id
