-- clv_summary: one row per customer with a counted order, the purchase history the BG/NBD and
-- Gamma-Gamma models take, as lifetimes' summary_data_from_transaction_data with freq='D' and
-- observation_period_end = as_of - 1 day. Reads orders. $as_of: the day, as in customer_rfm.
--   A customer's counted orders (dated before as_of, UTC) are summed per day; refunds
--   (negative amounts) count toward their day.
--   repeat_purchases     distinct purchase days - 1
--   repeat_recency_days  last purchase day - first purchase day
--   observed_days        (as_of - 1 day) - first purchase day
--   avg_repeat_amount    mean daily amount over the days after the first; null without one
with purchase_days as (
    select
        o.customer_id,
        cast(o.order_ts as date) as purchase_day,
        sum(o.amount) as amount
    from orders as o
    where o.order_ts < arrow_cast(cast($as_of as date), 'Timestamp(Microsecond, Some("UTC"))')
    group by o.customer_id, cast(o.order_ts as date)
),

ranked as (
    select
        d.customer_id,
        d.purchase_day,
        d.amount,
        min(d.purchase_day) over (partition by d.customer_id) as first_day
    from purchase_days as d
)

select
    r.customer_id,
    cast($as_of as date) as as_of,
    count(*) - 1 as repeat_purchases,
    cast(max(r.purchase_day) as bigint) - cast(min(r.first_day) as bigint) as repeat_recency_days,
    cast(cast($as_of as date) as bigint) - 1 - cast(min(r.first_day) as bigint) as observed_days,
    -- The exact decimal sum over the count, divided once in double: avg() of a decimal keeps
    -- 4 more digits, truncated, and a sum of doubles depends on the order rows arrive in.
    cast(sum(case when r.purchase_day > r.first_day then r.amount end) as double)
        / nullif(count(case when r.purchase_day > r.first_day then 1 end), 0)
        as avg_repeat_amount
from ranked as r
group by r.customer_id
