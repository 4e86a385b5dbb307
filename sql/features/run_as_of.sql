-- run_as_of: one row, the day the run's RFM is computed for.
-- $as_of: the pipeline's as_of var, 'YYYY-MM-DD'; empty means the day after the latest
--         order_ts date (UTC) in orders.
-- Orders on or after as_of do not count, so as_of is an exclusive upper bound.
with latest_order as (
    select cast(max(o.order_ts) as date) as last_order_date
    from orders as o
)

select
    coalesce(
        cast(nullif($as_of, '') as date),
        l.last_order_date + interval '1 day'
    ) as as_of
from latest_order as l
