-- clv_summary: one row per customer with a counted order, the purchase history the BG/NBD and
-- Gamma-Gamma models take, as lifetimes' summary_data_from_transaction_data with freq='D' and
-- observation_period_end = as_of - 1 day. Reads orders. $as_of: the day, as in customer_rfm.
--   A customer's counted orders (dated before as_of, UTC) are summed per day; refunds
--   (negative amounts) count toward their day.
--   repeat_purchases     distinct purchase days - 1
--   repeat_recency_days  last purchase day - first purchase day
--   observed_days        (as_of - 1 day) - first purchase day
--   avg_repeat_amount    mean daily amount over the days after the first; null without one
--
-- Shape, for speed: one aggregate per customer over the purchase days, the first day's amount
-- taken by first_value ordered by day (a per-group minimum, no sort), and the repeat days' sum
-- as the total less it, exactly, in decimals; a window for the first day sorted 8M purchase
-- days at M (3.9 s against 2.3 s).
with purchase_days as (
    select
        o.customer_id,
        cast(o.order_ts as date) as purchase_day,
        sum(o.amount) as amount
    from orders as o
    where o.order_ts < arrow_cast(cast($as_of as date), 'Timestamp(Microsecond, Some("UTC"))')
    group by o.customer_id, cast(o.order_ts as date)
)

select
    d.customer_id,
    cast($as_of as date) as as_of,
    count(*) - 1 as repeat_purchases,
    cast(max(d.purchase_day) as bigint) - cast(min(d.purchase_day) as bigint)
        as repeat_recency_days,
    cast(cast($as_of as date) as bigint) - 1 - cast(min(d.purchase_day) as bigint)
        as observed_days,
    -- The exact decimal sum over the count, divided once in double: avg() of a decimal keeps
    -- 4 more digits, truncated, and a sum of doubles depends on the order rows arrive in.
    cast(sum(d.amount) - first_value(d.amount order by d.purchase_day) as double)
        / nullif(count(*) - 1, 0)
        as avg_repeat_amount
from purchase_days as d
group by d.customer_id
